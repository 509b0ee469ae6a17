/* Fused CPU kernels for the task-vector methods (task arithmetic, TIES, DARE, Breadcrumbs,
 * DELLA) of alloykit.methods.task_vectors, Model Stock's statistics and linear.
 *
 * Why: written as eager torch operations, a TIES merge makes about 25 passes over every value
 * (subtract, abs, compare, sign, multiply, sum, ...), each reading and writing a temporary; the
 * loops below make one pass, keep each value in a register, and draw DARE's random numbers
 * inline. They compute exactly what the torch path of task_vectors.py computes, operation for
 * operation in float32 (built with -ffp-contract=off so no multiply-add is fused), and the
 * tests compare the two; only the L1 norms of `l1` rescaling are summed in another order.
 *
 * Plain C called through ctypes (which releases the GIL), so the engine's worker threads run
 * these kernels in parallel. No Python API is used.
 *
 * Inputs (x and base) are float32, or bfloat16 as stored in the checkpoint when `bf16` is set:
 * then each block is widened into a small buffer as it is used (exact), so a chunk is never
 * staged whole in float32, which saves a pass through memory and half the traffic.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h> /* x86-64 always has it; elsewhere the plain loops below are used */
#endif
#if defined(__SSE4_2__)
#include <nmmintrin.h> /* the crc32 instruction, in the x86-64-v3 build */
#endif

/* ---- which build to load ------------------------------------------------------------------ */

/* Whether this CPU runs the x86-64-v3 build of this file (AVX2, FMA, BMI2, F16C, ...: see
 * kernels_x86_64_v3.c). Called from the portable build, which runs anywhere. */
int ak_supports_x86_64_v3(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    return __builtin_cpu_supports("x86-64-v3") > 0;
#else
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
           __builtin_cpu_supports("f16c");
#endif
#else
    return 0;
#endif
}

/* ---- numpy's PCG64 stream, so draws equal np.random.Generator(PCG64(seed)).random(n, float32) */

typedef struct {
    uint64_t state_hi, state_lo, inc_hi, inc_lo;
    uint32_t has_uint32, uinteger; /* numpy hands out a 64-bit output as two 32-bit halves */
} ak_pcg64;

static inline uint64_t pcg64_next64(ak_pcg64 *g) {
    const __uint128_t mult = ((__uint128_t)2549297995355413924ULL << 64) | 4865540595714422341ULL;
    __uint128_t state = ((__uint128_t)g->state_hi << 64) | g->state_lo;
    __uint128_t inc = ((__uint128_t)g->inc_hi << 64) | g->inc_lo;
    state = state * mult + inc;
    g->state_hi = (uint64_t)(state >> 64);
    g->state_lo = (uint64_t)state;
    uint64_t mixed = g->state_hi ^ g->state_lo;
    unsigned rot = (unsigned)(g->state_hi >> 58);
    return (mixed >> rot) | (mixed << ((-rot) & 63));
}

static inline float pcg64_float(uint32_t bits) { return (float)(bits >> 8) * (1.0f / 16777216.0f); }

/* Hands out the half of a 64-bit output that numpy kept for the next call (has_uint32), if
 * any and if a number is wanted; returns how many numbers it wrote (0 or 1). */
static int64_t draw_kept_half(ak_pcg64 *g, int64_t count, float *out) {
    if (count <= 0 || !g->has_uint32) return 0;
    g->has_uint32 = 0;
    out[0] = pcg64_float(g->uinteger);
    return 1;
}

/* The next `count` float32 numbers of g's stream into out, as numpy's random(dtype=float32):
 * each 64-bit output gives two numbers, its low half first (numpy keeps the high half for the
 * next call: has_uint32). The state stays in registers and the loop has no branch on it, so
 * the only chain is the state's multiply: two numbers per step. */
static void draw_floats(ak_pcg64 *g, int64_t count, float *out) {
    ak_pcg64 local = *g;
    int64_t i = draw_kept_half(&local, count, out);
    for (; i + 2 <= count; i += 2) {
        uint64_t next = pcg64_next64(&local);
        out[i] = pcg64_float((uint32_t)next);
        out[i + 1] = pcg64_float((uint32_t)(next >> 32));
    }
    if (i < count) {
        uint64_t next = pcg64_next64(&local);
        out[i] = pcg64_float((uint32_t)next);
        local.has_uint32 = 1;
        local.uinteger = (uint32_t)(next >> 32);
    }
    *g = local;
}

/* draw_floats for two generators at once: their multiplies overlap in the CPU. */
static void draw_floats_2(ak_pcg64 *g, ak_pcg64 *h, int64_t count, float *out_g, float *out_h) {
    int64_t i = draw_kept_half(g, count, out_g), k = draw_kept_half(h, count, out_h);
    ak_pcg64 a = *g, b = *h;
    int64_t pairs = (count - (i > k ? i : k)) / 2;
    for (int64_t p = 0; p < pairs; p++, i += 2, k += 2) {
        uint64_t u = pcg64_next64(&a), v = pcg64_next64(&b);
        out_g[i] = pcg64_float((uint32_t)u);
        out_g[i + 1] = pcg64_float((uint32_t)(u >> 32));
        out_h[k] = pcg64_float((uint32_t)v);
        out_h[k + 1] = pcg64_float((uint32_t)(v >> 32));
    }
    *g = a, *h = b;
    draw_floats(g, count - i, out_g + i); /* what is left: at most two numbers each */
    draw_floats(h, count - k, out_h + k);
}

void ak_uniform(ak_pcg64 *g, int64_t count, float *out) { draw_floats(g, count, out); }

/* ---- which entries of a task vector survive --------------------------------------------- */

enum { KEEP_ALL = 0, KEEP_NONE = 1, KEEP_TOP = 2, KEEP_BAND = 3, KEEP_RANDOM = 4, KEEP_MASK = 5 };
enum { RESCALE_NONE = 0, RESCALE_PROBABILITY = 1, RESCALE_FACTOR = 2 };
enum { SIGN_NONE = 0, SIGN_TOTAL = 1, SIGN_FREQUENCY = 2 };

typedef struct {
    int32_t mode;       /* KEEP_* */
    int32_t rescale;    /* RESCALE_* */
    float cut[2];       /* TOP: keep the top cut[0]; BAND: the top cut[0] minus the top cut[1] */
    int32_t all_equal[2]; /* every magnitude equal to cut[j] is in top j */
    int64_t left[2];    /* otherwise: magnitudes equal to cut[j] still in top j, lowest first */
    float probability;  /* RANDOM: keep probability when `probabilities` is NULL */
    float factor;       /* RESCALE_FACTOR */
    float weight;
    const float *probabilities; /* RANDOM: per-entry keep probabilities (DELLA), or NULL */
    ak_pcg64 *draws;    /* RANDOM */
    uint8_t *mask;      /* MASK: bit i of the tensor set where entry i survives (little-endian
                         * bit order); ak_l1_norms fills it when not NULL */
    int64_t mask_offset; /* flat index in the tensor of this call's first entry */
} ak_keep;

static inline int mask_bit(const uint8_t *mask, int64_t i) { return (mask[i >> 3] >> (i & 7)) & 1; }

/* The eight keep values (1.0 or 0.0) of each mask byte, bit 0 first: a table lookup instead
 * of eight shifts and conversions per byte. */
#define AK_BITS(n)                                                                               \
    {(n) & 1, (n) >> 1 & 1, (n) >> 2 & 1, (n) >> 3 & 1,                                         \
     (n) >> 4 & 1, (n) >> 5 & 1, (n) >> 6 & 1, (n) >> 7 & 1}
#define AK_BITS4(n) AK_BITS(n), AK_BITS((n) + 1), AK_BITS((n) + 2), AK_BITS((n) + 3)
#define AK_BITS16(n) AK_BITS4(n), AK_BITS4((n) + 4), AK_BITS4((n) + 8), AK_BITS4((n) + 12)
#define AK_BITS64(n) AK_BITS16(n), AK_BITS16((n) + 16), AK_BITS16((n) + 32), AK_BITS16((n) + 48)
static const float BYTE_AS_KEEPS[256][8] = {AK_BITS64(0), AK_BITS64(64), AK_BITS64(128),
                                             AK_BITS64(192)};

static inline float sign_of(float v) { return (float)((v > 0.0f) - (v < 0.0f)); }

/* Entries are processed in blocks: the random draws of a block are made first, a model's
 * block in one tight loop (draw_floats), then the block is merged. */
#define BLOCK 512
#define MAX_MODELS 64

/* `count` values of an input from index `at` as float32: the input itself when it is float32,
 * else its bfloat16 values widened into `widened` (a BLOCK-sized buffer; widening is exact). */
static inline const float *block_of(const void *data, int32_t bf16, int64_t at, int64_t count,
                                    float *widened) {
    if (!bf16) return (const float *)data + at;
    const uint16_t *half = (const uint16_t *)data + at;
    for (int64_t j = 0; j < count; j++) { /* vectorizes */
        uint32_t bits = (uint32_t)half[j] << 16;
        memcpy(&widened[j], &bits, sizeof bits);
    }
    return widened;
}

static int any_random(const ak_keep *keeps, int32_t n) {
    for (int32_t m = 0; m < n; m++)
        if (keeps[m].mode == KEEP_RANDOM) return 1;
    return 0;
}

/* Callers skip it when no model draws: the mode tests alone cost a fifth of a merge. */
static void draw_block(ak_keep *keeps, int32_t n, ak_pcg64 *gens, int64_t count,
                       float draws[][BLOCK]) {
    int32_t waiting = -1; /* a drawing model not yet paired with another */
    for (int32_t m = 0; m < n; m++) {
        if (keeps[m].mode != KEEP_RANDOM) continue;
        if (waiting < 0) {
            waiting = m;
            continue;
        }
        draw_floats_2(&gens[waiting], &gens[m], count, draws[waiting], draws[m]);
        waiting = -1;
    }
    if (waiting >= 0) draw_floats(&gens[waiting], count, draws[waiting]);
}

static void load_generators(ak_keep *keeps, int32_t n, ak_pcg64 *gens) {
    for (int32_t m = 0; m < n; m++)
        if (keeps[m].mode == KEEP_RANDOM) gens[m] = *keeps[m].draws;
}

static void store_generators(ak_keep *keeps, int32_t n, ak_pcg64 *gens) {
    for (int32_t m = 0; m < n; m++)
        if (keeps[m].mode == KEEP_RANDOM) *keeps[m].draws = gens[m];
}

/* Counts of the 16-bit digit at `shift` of |x - base|'s bit pattern, over the entries whose
 * higher bits equal `prefix` (all entries when `level` is 0). `counts` is two tables of 65536
 * that the caller adds up: at level 0 consecutive entries go to alternate tables, so that two
 * equal digits in a row (common: neighbours have similar magnitudes) do not wait on each
 * other's increment (25% faster here). */
void ak_count_digits(const void *x, const void *base, int32_t bf16, int64_t len, int32_t shift,
                     int32_t level, int64_t prefix, int64_t *counts) {
    uint32_t digits[BLOCK];
    float wx[BLOCK], wb[BLOCK];
    int64_t *other = counts + 65536;
    for (int64_t start = 0; start < len; start += BLOCK) {
        int64_t count = len - start < BLOCK ? len - start : BLOCK, j = 0;
        const float *xs = block_of(x, bf16, start, count, wx);
        const float *bs = block_of(base, bf16, start, count, wb);
        for (int64_t i = 0; i < count; i++) { /* vectorizes */
            float magnitude = fabsf(xs[i] - bs[i]);
            memcpy(&digits[i], &magnitude, sizeof digits[i]);
        }
        if (level == 0) {
            for (; j + 2 <= count; j += 2) {
                counts[digits[j] >> shift]++;
                other[digits[j + 1] >> shift]++;
            }
            if (j < count) counts[digits[j] >> shift]++;
            continue;
        }
        /* few entries match the prefix: groups of 16 are tested at once (vectorized), and
         * only a group with a match is counted entry by entry; a conditional increment per
         * entry was compiled into a read-modify-write of the table for every entry */
        uint32_t high = (uint32_t)shift + 16, wanted = (uint32_t)prefix;
        for (int64_t i = count; i < (count + 15) / 16 * 16; i++)
            digits[i] = 0xFFFFFFFFu; /* never a magnitude's prefix: its sign bit is set */
        for (int64_t i = 0; i < count; i += 16) {
            uint32_t hit = 0;
            for (int k = 0; k < 16; k++) hit |= (uint32_t)(digits[i + k] >> high == wanted);
            if (hit)
                for (int k = 0; k < 16; k++)
                    if (digits[i + k] >> high == wanted)
                        counts[(digits[i + k] >> shift) & 0xFFFF]++;
        }
    }
}

/* Which entries of one model's block survive: keep[j] = 1.0 or 0.0; sets the probability of
 * each kept entry in `probability` for RANDOM. Loops are kept simple so that they vectorize. */
static void keep_block(ak_keep *k, const float *x, const float *b, int64_t offset, int64_t count,
                       const float *draws, float *keep, float *probability) {
    if (k->mode == KEEP_ALL || k->mode == KEEP_NONE) {
        float value = k->mode == KEEP_ALL ? 1.0f : 0.0f;
        for (int64_t j = 0; j < count; j++) keep[j] = value;
        return;
    }
    if (k->mode == KEEP_MASK) {
        int64_t first = k->mask_offset + offset, j = 0;
        if ((first & 7) == 0) /* whole bytes */
            for (; j + 8 <= count; j += 8)
                memcpy(&keep[j], BYTE_AS_KEEPS[k->mask[(first + j) >> 3]], 8 * sizeof(float));
        for (; j < count; j++) keep[j] = mask_bit(k->mask, first + j) ? 1.0f : 0.0f;
        return;
    }
    if (k->mode == KEEP_RANDOM) {
        if (k->probabilities) {
            const float *p = k->probabilities + offset;
            for (int64_t j = 0; j < count; j++) {
                probability[j] = p[j];
                keep[j] = draws[j] < p[j] ? 1.0f : 0.0f;
            }
        } else {
            float p = k->probability;
            for (int64_t j = 0; j < count; j++) keep[j] = draws[j] < p ? 1.0f : 0.0f;
        }
        return;
    }
    int bands = k->mode == KEEP_BAND ? 2 : 1;
    for (int band = 0; band < bands; band++) {
        float cut = k->cut[band];
        float sign = band == 0 ? 1.0f : -1.0f; /* the outlier band is taken away */
        if (k->all_equal[band]) {
            for (int64_t j = 0; j < count; j++) {
                float top = fabsf(x[j] - b[j]) >= cut ? 1.0f : 0.0f;
                keep[j] = band == 0 ? top : keep[j] - top;
            }
        } else {
            for (int64_t j = 0; j < count; j++) {
                float top = fabsf(x[j] - b[j]) > cut ? 1.0f : 0.0f;
                keep[j] = band == 0 ? top : keep[j] - top;
            }
            /* equal magnitudes are kept lowest position first while the hand-out lasts */
            for (int64_t j = 0; j < count && k->left[band] > 0; j++) {
                if (fabsf(x[j] - b[j]) == cut) {
                    keep[j] += sign;
                    k->left[band]--;
                }
            }
        }
    }
}

/* weighted[j] = weight * rescale(delta * keep[j]), as Sparsifier.apply then the weighting. */
static void weigh_block(ak_keep *k, const float *x, const float *b, int64_t count,
                        const float *keep, const float *probability, float *weighted) {
    float weight = k->weight;
    if (k->rescale == RESCALE_PROBABILITY && k->mode == KEEP_RANDOM && k->probabilities) {
        for (int64_t j = 0; j < count; j++)
            weighted[j] = (x[j] - b[j]) * keep[j] / probability[j] * weight;
    } else if (k->rescale == RESCALE_PROBABILITY) {
        float p = k->probability;
        for (int64_t j = 0; j < count; j++) weighted[j] = (x[j] - b[j]) * keep[j] / p * weight;
    } else if (k->rescale == RESCALE_FACTOR) {
        float factor = k->factor;
        for (int64_t j = 0; j < count; j++)
            weighted[j] = (x[j] - b[j]) * keep[j] * factor * weight;
    } else {
        for (int64_t j = 0; j < count; j++) weighted[j] = (x[j] - b[j]) * keep[j] * weight;
    }
}

/* Sets bit first + j of `mask` where keep[j] is not 0 (the mask starts zeroed). */
static void record_kept(uint8_t *mask, int64_t first, const float *keep, int64_t count) {
    int64_t j = 0;
    if ((first & 7) == 0) { /* whole bytes, each written once */
#if defined(__SSE2__)
        const __m128 zero = _mm_setzero_ps();
        for (; j + 8 <= count; j += 8) { /* lane i of a comparison gives bit i */
            int low = _mm_movemask_ps(_mm_cmpneq_ps(_mm_loadu_ps(keep + j), zero));
            int high = _mm_movemask_ps(_mm_cmpneq_ps(_mm_loadu_ps(keep + j + 4), zero));
            mask[(first + j) >> 3] = (uint8_t)(low | high << 4);
        }
#else
        for (; j + 8 <= count; j += 8) {
            uint8_t byte = 0;
            for (int b = 0; b < 8; b++) byte |= (uint8_t)((keep[j + b] != 0.0f) << b);
            mask[(first + j) >> 3] = byte;
        }
#endif
    }
    for (; j < count; j++) {
        int64_t i = first + j;
        mask[i >> 3] |= (uint8_t)((keep[j] != 0.0f) << (i & 7));
    }
}

/* L1 norms of each model's x[m] - base before and after thinning by keeps[m] (not rescaled),
 * added to sums[2m], sums[2m + 1]. Summed in eight double lanes (a loop that vectorizes), so in
 * another order than torch's float32 norm: the two paths agree within float32 rounding. When
 * keeps[m].mask is set (and the mode is not MASK), the surviving entries' bits are set in it
 * (it starts zeroed), so the merge pass reads them instead of drawing and ranking again. The
 * models are measured together so that their generators draw side by side (one generator's
 * steps wait on each other; several overlap in the CPU). Returns -1 when out of memory. */
int ak_l1_norms(const void *const *x, const void *base, int32_t bf16, int64_t len, int32_t n,
                ak_keep *keeps, double *sums) {
    float (*draws)[BLOCK] = malloc(sizeof(float) * BLOCK * (size_t)n);
    double (*lanes)[2][8] = calloc((size_t)n, sizeof *lanes); /* before, after */
    if (!draws || !lanes) {
        free(draws), free(lanes);
        return -1;
    }
    float keep[BLOCK], probability[BLOCK], magnitude[BLOCK], kept[BLOCK], wx[BLOCK], wb[BLOCK];
    ak_pcg64 gens[MAX_MODELS];
    int random = any_random(keeps, n);
    load_generators(keeps, n, gens);
    for (int64_t start = 0; start < len; start += BLOCK) {
        int64_t count = len - start < BLOCK ? len - start : BLOCK;
        const float *bs = block_of(base, bf16, start, count, wb);
        if (random) draw_block(keeps, n, gens, count, draws);
        for (int32_t m = 0; m < n; m++) {
            ak_keep *k = &keeps[m];
            const float *xs = block_of(x[m], bf16, start, count, wx);
            keep_block(k, xs, bs, start, count, draws[m], keep, probability);
            if (k->mask && k->mode != KEEP_MASK)
                record_kept(k->mask, k->mask_offset + start, keep, count);
            for (int64_t j = 0; j < count; j++) {
                float delta = xs[j] - bs[j];
                magnitude[j] = fabsf(delta);
                kept[j] = fabsf(delta * keep[j]);
            }
            for (int64_t j = count; j < (count + 7) / 8 * 8; j++) magnitude[j] = kept[j] = 0.0f;
            double *before = lanes[m][0], *after = lanes[m][1];
            for (int64_t j = 0; j < count; j += 8)
                for (int lane = 0; lane < 8; lane++) {
                    before[lane] += magnitude[j + lane];
                    after[lane] += kept[j + lane];
                }
        }
    }
    store_generators(keeps, n, gens);
    for (int32_t m = 0; m < n; m++)
        for (int lane = 0; lane < 8; lane++) {
            sums[2 * m] += lanes[m][0][lane];
            sums[2 * m + 1] += lanes[m][1][lane];
        }
    free(draws), free(lanes);
    return 0;
}

/* out = base + scale * combine_m(weight_m * thin_m(x_m - base)), as TaskVectorMerge.merge.
 * Model m's `len` values start at x + m * stride (stride >= len); combine is the TIES disjoint
 * sum (mean with `normalize`) under a sign rule, or a plain sum divided by `divide_by`. `out`
 * may be x (model 0's rows, float32 inputs): a block of every input is read before that block
 * of out is written. Returns -1 when out of memory. */
int ak_task_vectors(const void *x, const void *base, int32_t bf16, int64_t len, int64_t stride,
                    int32_t n, ak_keep *keeps, int32_t sign_rule, int32_t normalize,
                    float divide_by, float scale, float *out) {
    float (*draws)[BLOCK] = malloc(sizeof(float) * BLOCK * (2 * (size_t)n + 7));
    if (!draws) return -1;
    float (*weighted)[BLOCK] = draws + n;
    float *keep = weighted[n], *probability = keep + BLOCK, *merged = probability + BLOCK;
    float *votes = merged + BLOCK, *divisor = votes + BLOCK, *wx = divisor + BLOCK;
    float *wb = wx + BLOCK;
    ak_pcg64 gens[MAX_MODELS];
    int random = any_random(keeps, n);
    load_generators(keeps, n, gens);
    for (int64_t start = 0; start < len; start += BLOCK) {
        int64_t count = len - start < BLOCK ? len - start : BLOCK;
        const float *b = block_of(base, bf16, start, count, wb);
        if (random) draw_block(keeps, n, gens, count, draws);
        for (int32_t m = 0; m < n; m++) {
            const float *xm = block_of(x, bf16, (int64_t)m * stride + start, count, wx);
            if (keeps[m].mode == KEEP_ALL) { /* x * 1.0 is x: the torch path skips it too */
                float weight = keeps[m].weight, *w = weighted[m];
                for (int64_t j = 0; j < count; j++) w[j] = (xm[j] - b[j]) * weight;
                continue;
            }
            keep_block(&keeps[m], xm, b, start, count, draws[m], keep, probability);
            weigh_block(&keeps[m], xm, b, count, keep, probability, weighted[m]);
        }
        if (sign_rule == SIGN_NONE) {
            for (int64_t j = 0; j < count; j++) merged[j] = weighted[0][j];
            for (int32_t m = 1; m < n; m++)
                for (int64_t j = 0; j < count; j++) merged[j] += weighted[m][j];
            if (normalize)
                for (int64_t j = 0; j < count; j++) merged[j] = merged[j] / divide_by;
        } else {
            if (sign_rule == SIGN_TOTAL) {
                for (int64_t j = 0; j < count; j++) votes[j] = weighted[0][j];
                for (int32_t m = 1; m < n; m++)
                    for (int64_t j = 0; j < count; j++) votes[j] += weighted[m][j];
            } else {
                for (int64_t j = 0; j < count; j++) votes[j] = sign_of(weighted[0][j]);
                for (int32_t m = 1; m < n; m++)
                    for (int64_t j = 0; j < count; j++) votes[j] += sign_of(weighted[m][j]);
            }
            /* elected sign: + where votes >= 0; a model agrees where its sign times the
             * elected sign is positive (as sign_consensus); branch-free so it vectorizes */
            for (int64_t j = 0; j < count; j++) votes[j] = votes[j] >= 0.0f ? 1.0f : -1.0f;
            for (int32_t m = 0; m < n; m++) {
                float weight = keeps[m].weight;
                const float *w = weighted[m];
                if (m == 0) {
                    for (int64_t j = 0; j < count; j++) {
                        float agree = sign_of(w[j]) * votes[j] > 0.0f ? 1.0f : 0.0f;
                        merged[j] = w[j] * agree;
                        divisor[j] = weight * agree;
                    }
                } else {
                    for (int64_t j = 0; j < count; j++) {
                        float agree = sign_of(w[j]) * votes[j] > 0.0f ? 1.0f : 0.0f;
                        merged[j] += w[j] * agree;
                        divisor[j] += weight * agree;
                    }
                }
            }
            if (normalize)
                for (int64_t j = 0; j < count; j++)
                    merged[j] = merged[j] / (divisor[j] != 0.0f ? divisor[j] : 1.0f);
        }
        if (scale != 1.0f)
            for (int64_t j = 0; j < count; j++) merged[j] = merged[j] * scale;
        for (int64_t j = 0; j < count; j++) out[start + j] = merged[j] + b[j];
    }
    store_generators(keeps, n, gens);
    free(draws);
    return 0;
}

/* ---- linear: a weighted sum of the models ----------------------------------------------- */

/* out = (sum_m weights[m] * x[m]) / divide_by, summed in model order as linear's torch path
 * (x is [n][len]; out must not overlap it); one pass, where torch makes a matrix-vector
 * product and a division. */
void ak_weighted_sum(const void *x, int32_t bf16, int64_t len, int32_t n, const float *weights,
                     float divide_by, float *restrict out) {
    float widened[BLOCK];
    for (int64_t start = 0; start < len; start += BLOCK) { /* a block of out stays in cache */
        int64_t count = len - start < BLOCK ? len - start : BLOCK;
        float *merged = out + start;
        const float *x0 = block_of(x, bf16, start, count, widened);
        for (int64_t j = 0; j < count; j++) merged[j] = x0[j] * weights[0];
        for (int32_t m = 1; m < n; m++) {
            const float *xm = block_of(x, bf16, (int64_t)m * len + start, count, widened);
            float weight = weights[m];
            for (int64_t j = 0; j < count; j++) merged[j] += xm[j] * weight;
        }
        if (divide_by != 1.0f)
            for (int64_t j = 0; j < count; j++) merged[j] = merged[j] / divide_by;
    }
}

/* ---- Model Stock: the Gram matrix of the task vectors ------------------------------------ */

/* Adds to `sums` the squared norm of every task vector x_m - base (m < n), then the dot product
 * of every pair i < j in (0, 1), (0, 2), ..., (1, 2), ... order. Model m's `len` values start
 * at x + m * stride. Products are summed per block in eight float32 lanes, blocks in double,
 * so long tensors lose no more than a block's rounding. Returns -1 when out of memory. */
int ak_offset_products(const void *x, const void *base, int32_t bf16, int64_t len, int64_t stride,
                       int32_t n, double *sums) {
    float (*deltas)[BLOCK] = malloc(sizeof(float) * BLOCK * (size_t)n);
    if (!deltas) return -1;
    float wx[BLOCK], wb[BLOCK];
    for (int64_t start = 0; start < len; start += BLOCK) {
        int64_t count = len - start < BLOCK ? len - start : BLOCK;
        int64_t padded = (count + 7) / 8 * 8;
        const float *b = block_of(base, bf16, start, count, wb);
        for (int32_t m = 0; m < n; m++) {
            const float *xm = block_of(x, bf16, (int64_t)m * stride + start, count, wx);
            for (int64_t j = 0; j < count; j++) deltas[m][j] = xm[j] - b[j];
            for (int64_t j = count; j < padded; j++) deltas[m][j] = 0.0f;
        }
        int64_t slot = n;
        for (int32_t i = 0; i < n; i++)
            for (int32_t k = i; k < n; k++) {
                float lanes[8] = {0};
                for (int64_t j = 0; j < padded; j += 8)
                    for (int lane = 0; lane < 8; lane++)
                        lanes[lane] += deltas[i][j + lane] * deltas[k][j + lane];
                double total = 0.0;
                for (int lane = 0; lane < 8; lane++) total += lanes[lane];
                sums[i == k ? i : slot++] += total;
            }
    }
    free(deltas);
    return 0;
}

/* ---- DELLA: keep probabilities rising with magnitude rank within each row ------------------ */

/* Sorts items (a magnitude's bit pattern << 32 | its position) by magnitude, equal ones by
 * position: LSD radix sort with three 11-bit digits, which cover the 31 bits of a non-negative
 * float; a digit shared by every item needs no pass. Returns `items` or `spare`. */
static uint64_t *sort_by_magnitude(uint64_t *items, uint64_t *spare, int64_t width,
                                   int64_t *counts) {
    memset(counts, 0, sizeof(int64_t) * 3 * 2048);
    for (int64_t j = 0; j < width; j++) {
        uint32_t key = (uint32_t)(items[j] >> 32);
        counts[key & 2047]++;
        counts[2048 + ((key >> 11) & 2047)]++;
        counts[4096 + ((key >> 22) & 2047)]++;
    }
    for (int pass = 0; pass < 3; pass++) {
        int64_t *digit_counts = counts + pass * 2048;
        int shift = 32 + 11 * pass;
        if (digit_counts[(items[0] >> shift) & 2047] == width) continue;
        int64_t total = 0;
        for (int d = 0; d < 2048; d++) {
            int64_t c = digit_counts[d];
            digit_counts[d] = total;
            total += c;
        }
        for (int64_t j = 0; j < width; j++) {
            uint64_t item = items[j];
            spare[digit_counts[(item >> shift) & 2047]++] = item;
        }
        uint64_t *swap = items;
        items = spare;
        spare = swap;
    }
    return items;
}

/* Sorts the row's items (a magnitude's bit pattern << 32 | its position, positions
 * ascending; the bit patterns of non-negative floats order as the floats do) by magnitude,
 * equal magnitudes by position. A counting sort on each pattern's exponent and top mantissa
 * bits (buckets of 1/128 octave, eight octaves below the row's largest magnitude; smaller
 * ones share bucket 0) leaves only the order within buckets to settle, which an insertion
 * sort does in a pass plus a few moves per entry. Rows that would make it slow (many unequal
 * magnitudes in one bucket) go to the radix sort instead, so no row costs much more than
 * that sort. Returns `items` or `spare`. */
#define RANK_SHIFT 48 /* of an item: the key's top 16 bits */
#define RANK_BUCKETS 1024
static uint64_t *order_by_magnitude(uint64_t *items, uint64_t *spare, int64_t width,
                                    float largest, uint32_t *starts, int64_t *counts) {
    uint32_t top;
    memcpy(&top, &largest, sizeof top);
    uint32_t highest = top >> (RANK_SHIFT - 32);
    uint32_t lowest = highest >= RANK_BUCKETS - 1 ? highest - (RANK_BUCKETS - 1) : 0;
    /* the two halves of the row are counted and scattered with their own tables, so that
     * neighbours in one bucket (common) do not wait on each other's increment */
    uint32_t *first = starts, *second = starts + RANK_BUCKETS;
    int64_t half = width / 2;
    memset(starts, 0, sizeof(uint32_t) * 2 * RANK_BUCKETS);
    for (int64_t j = 0; j < half; j++) {
        uint32_t a = (uint32_t)(items[j] >> RANK_SHIFT);
        uint32_t b = (uint32_t)(items[half + j] >> RANK_SHIFT);
        first[a > lowest ? a - lowest : 0]++;
        second[b > lowest ? b - lowest : 0]++;
    }
    for (int64_t j = 2 * half; j < width; j++) {
        uint32_t b = (uint32_t)(items[j] >> RANK_SHIFT);
        second[b > lowest ? b - lowest : 0]++;
    }
    uint32_t total = 0;
    for (int b = 0; b < RANK_BUCKETS; b++) { /* bucket b: its first-half entries, then the rest */
        uint32_t in_first = first[b], in_second = second[b];
        first[b] = total;
        second[b] = total + in_first;
        total += in_first + in_second;
    }
    for (int64_t j = 0; j < half; j++) { /* stable: a bucket's positions stay ascending */
        uint64_t p = items[j], q = items[half + j];
        uint32_t a = (uint32_t)(p >> RANK_SHIFT), b = (uint32_t)(q >> RANK_SHIFT);
        spare[first[a > lowest ? a - lowest : 0]++] = p;
        spare[second[b > lowest ? b - lowest : 0]++] = q;
    }
    for (int64_t j = 2 * half; j < width; j++) {
        uint32_t b = (uint32_t)(items[j] >> RANK_SHIFT);
        spare[second[b > lowest ? b - lowest : 0]++] = items[j];
    }
    int64_t budget = 8 * width; /* moves the insertion sort may make before giving up */
    for (int64_t i = 1; i < width; i++) {
        uint64_t item = spare[i];
        int64_t k = i;
        for (; k > 0 && spare[k - 1] > item; k--) spare[k] = spare[k - 1];
        spare[k] = item;
        budget -= i - k;
        if (budget < 0) return sort_by_magnitude(items, spare, width, counts);
    }
    return spare;
}

/* Per-entry keep probabilities of |x - base| for rows of `width` entries: rank r of a row
 * (equal magnitudes ranked by position) gets r / (width - 1) * span + low. Returns 0 on
 * success, -1 when out of memory. */
int ak_della_probabilities(const void *x, const void *base, int32_t bf16, int64_t rows,
                           int64_t width, float span, float low, float *out) {
    uint64_t *items = malloc(sizeof(uint64_t) * 2 * (size_t)width);
    int64_t *counts = malloc(sizeof(int64_t) * 3 * 2048);
    uint32_t *starts = malloc(sizeof(uint32_t) * 2 * RANK_BUCKETS);
    float *by_rank = malloc(sizeof(float) * (size_t)width); /* the same for every row */
    if (!items || !counts || !starts || !by_rank) {
        free(items), free(counts), free(starts), free(by_rank);
        return -1;
    }
    float steps = (float)(width - 1), wx[BLOCK], wb[BLOCK];
    for (int64_t rank = 0; rank < width; rank++) {
        float relative = (float)rank / steps;
        by_rank[rank] = relative * span + low;
    }
    for (int64_t r = 0; r < rows; r++) {
        float *pr = out + r * width, largest = 0.0f;
        for (int64_t start = 0; start < width; start += BLOCK) {
            int64_t count = width - start < BLOCK ? width - start : BLOCK;
            const float *xs = block_of(x, bf16, r * width + start, count, wx);
            const float *bs = block_of(base, bf16, r * width + start, count, wb);
            for (int64_t j = 0; j < count; j++) {
                float magnitude = fabsf(xs[j] - bs[j]);
                largest = magnitude > largest ? magnitude : largest;
                uint32_t key;
                memcpy(&key, &magnitude, sizeof key);
                items[start + j] = (uint64_t)key << 32 | (uint64_t)(start + j);
            }
        }
        const uint64_t *sorted =
            order_by_magnitude(items, items + width, width, largest, starts, counts);
        for (int64_t rank = 0; rank < width; rank++) pr[(uint32_t)sorted[rank]] = by_rank[rank];
    }
    free(items), free(counts), free(starts), free(by_rank);
    return 0;
}

/* ---- bfloat16 storage <-> float32 compute, with the finiteness check in the same pass ------- */

/* dst = src widened to float32 (exact). Returns 1 when every value is finite. */
int ak_widen_bf16(const uint16_t *src, float *dst, int64_t count) {
    uint32_t bad = 0;
    for (int64_t i = 0; i < count; i++) {
        uint32_t bits = (uint32_t)src[i] << 16;
        bad |= (bits & 0x7F800000u) == 0x7F800000u;
        memcpy(&dst[i], &bits, sizeof bits);
    }
    return !bad;
}

/* Whether every bfloat16 value of src is finite (the check of inputs the kernels read as
 * stored). */
int ak_finite_bf16(const uint16_t *src, int64_t count) {
    uint32_t bad = 0;
    for (int64_t i = 0; i < count; i++) bad |= (src[i] & 0x7F80u) == 0x7F80u;
    return !bad;
}

/* dst = src rounded to bfloat16, to nearest even as torch rounds. Returns 1 when every value
 * of src is finite (a NaN's rounding is then never written). */
int ak_narrow_bf16(const float *src, uint16_t *dst, int64_t count) {
    uint32_t bad = 0;
    for (int64_t i = 0; i < count; i++) {
        uint32_t bits;
        memcpy(&bits, &src[i], sizeof bits);
        bad |= (bits & 0x7F800000u) == 0x7F800000u;
        dst[i] = (uint16_t)((bits + (((bits >> 16) & 1u) + 0x7FFFu)) >> 16);
    }
    return !bad;
}

/* ---- CRC-32C of the bytes written, for the output journal ----------------------------------- */

/* Whether ak_crc32c runs on the CPU's crc32 instruction (10.7 against zlib's 3.4 GB/s); the
 * sink journals CRC-32C only then, and zlib's CRC-32 otherwise. */
int ak_crc32c_in_hardware(void) {
#if defined(__SSE4_2__) && defined(__x86_64__)
    return 1;
#else
    return 0;
#endif
}

#define CRC32C_POLY 0x82F63B78u /* reflected */

#if defined(__SSE4_2__) && defined(__x86_64__)
/* a * b modulo the CRC's polynomial, in its reflected bit order (bit 31 is x^0). */
static uint32_t crc32c_multiply(uint32_t a, uint32_t b) {
    uint32_t product = 0;
    for (uint32_t m = 1u << 31; m; m >>= 1) {
        if (a & m) product ^= b;
        b = (b >> 1) ^ (CRC32C_POLY & -(b & 1u));
    }
    return product;
}

/* x^(8 * bytes) modulo the polynomial: what a CRC register is multiplied by when `bytes` zero
 * bytes pass through it (by squaring: x^(2^k) for each set bit). */
static uint32_t crc32c_shift(int64_t bytes) {
    uint32_t result = 1u << 31, power = 1u << 23; /* x^0, x^8 */
    for (; bytes; bytes >>= 1) {
        if (bytes & 1) result = crc32c_multiply(result, power);
        power = crc32c_multiply(power, power);
    }
    return result;
}

/* The raw register after `len` bytes from `crc` (no inversions), one instruction per 8 bytes. */
static uint32_t crc32c_run(uint32_t crc, const uint8_t *bytes, int64_t len) {
    for (; len >= 8; len -= 8, bytes += 8) {
        uint64_t word;
        memcpy(&word, bytes, sizeof word);
        crc = (uint32_t)_mm_crc32_u64(crc, word);
    }
    for (; len > 0; len--) crc = _mm_crc32_u8(crc, *bytes++);
    return crc;
}
#endif

/* CRC-32C (Castagnoli; iSCSI, ext4) of data, continuing `crc` (0 to start): equal to
 * crc32c(a + b) when given crc32c(a) and b. With the instruction, large inputs run as three
 * interleaved streams (the instruction's latency is three times its issue rate), joined by
 * the CRC's linearity: reg(s, A + B) = reg(s, A) * x^(8|B|) ^ reg(0, B). Without it, a table
 * a byte at a time (the portable build verifies a journal written by the other one). */
uint32_t ak_crc32c(const void *data, int64_t len, uint32_t crc) {
    const uint8_t *bytes = (const uint8_t *)data;
    crc = ~crc;
#if defined(__SSE4_2__) && defined(__x86_64__)
    if (len >= 3 * 4096) {
        int64_t third = len / 3 / 8 * 8;
        const uint8_t *second = bytes + third, *last = bytes + 2 * third;
        uint32_t a = crc, b = 0, c = 0;
        for (int64_t at = 0; at < third; at += 8) {
            uint64_t wa, wb, wc;
            memcpy(&wa, bytes + at, 8);
            memcpy(&wb, second + at, 8);
            memcpy(&wc, last + at, 8);
            a = (uint32_t)_mm_crc32_u64(a, wa);
            b = (uint32_t)_mm_crc32_u64(b, wb);
            c = (uint32_t)_mm_crc32_u64(c, wc);
        }
        uint32_t shift = crc32c_shift(third);
        crc = crc32c_multiply(crc32c_multiply(a, shift) ^ b, shift) ^ c;
        crc = crc32c_run(crc, last + third, len - 3 * third);
    } else {
        crc = crc32c_run(crc, bytes, len);
    }
#else
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t entry = i;
        for (int bit = 0; bit < 8; bit++) entry = (entry >> 1) ^ (CRC32C_POLY & -(entry & 1u));
        table[i] = entry;
    }
    for (; len > 0; len--) crc = (crc >> 8) ^ table[(crc ^ *bytes++) & 0xFFu];
#endif
    return ~crc;
}
