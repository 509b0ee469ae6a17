/* kernels.c built for x86-64-v3 CPUs (AVX2 and the rest of the 2015 x86-64 level): the same
 * loops with 256-bit vectors, about 10-15% less CPU time in a 1.1B merge. A separate file so
 * that its object does not overwrite the portable build's; the compiler flags are in setup.py.
 * Results are bit-identical to the portable build's: no multiply-add is fused
 * (-ffp-contract=off) and every reduction order is written out in the loops. */
#include "kernels.c"
