"""Build of the optional C kernels (alloykit/native/kernels.c); everything else is in
pyproject.toml. ``optional=True``: without a C compiler alloykit installs and runs on its
torch path alone."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "alloykit.native._kernels",
            ["alloykit/native/kernels.c"],
            # no fused multiply-add (the kernels round exactly as the torch path does); no FP
            # traps, so that selects vectorize (results are the same)
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-trapping-math"],
            optional=True,
        )
    ]
)
