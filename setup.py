"""Build of the optional C kernels (alloykit/native/kernels.c); everything else is in
pyproject.toml. ``optional=True``: without a C compiler alloykit installs and runs on its
torch path alone.

On x86-64 the kernels are built twice: a portable build that runs on any x86-64 CPU, and an
x86-64-v3 build (AVX2 and its 2015 companions) that ``alloykit.native`` loads instead when the
CPU has them. Both compute the same bits; the second is 10-15% faster (docs/engine.md)."""

import platform
import sys

from setuptools import Extension, setup

# no fused multiply-add (the kernels round exactly as the torch path does); no FP traps, so
# that selects vectorize (results are the same)
FLAGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math"]
X86_64 = platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32"

extensions = [
    Extension(
        "alloykit.native._kernels",
        ["alloykit/native/kernels.c"],
        extra_compile_args=FLAGS,
        optional=True,
    )
]
if X86_64:
    extensions.append(
        Extension(
            "alloykit.native._kernels_x86_64_v3",
            ["alloykit/native/kernels_x86_64_v3.c"],
            depends=["alloykit/native/kernels.c"],
            extra_compile_args=[*FLAGS, "-march=x86-64-v3"],
            optional=True,  # compilers older than GCC 11 / clang 12 lack the level's name
        )
    )

setup(ext_modules=extensions)
