"""Build the Cython kernels in native/ into compiled modules of the agent package.

- agent._frames       frame preprocessing (portable build)
- agent._frames_avx2  the same source built with AVX2 + FMA (x86-64 only; chosen at import when
                      the CPU has both, see agent/native.py)
- agent._frames_avx512 the AVX2 build with AVX-512 VBMI palette lookups (x86-64 only; chosen
                      over it when the CPU has AVX-512 F, BW and VBMI)
- agent._replay       frame-ring replay memory, uniform and prioritized sampling
- agent._pool         the worker pool's shared words: doorbells, sleep flags, fence, spin-waits

Cython directives are set once here. ATARI_AGENT_DEBUG_BUILD=1 turns bounds checks, wraparound
and initialisation checks on and optimisation off, for hunting a memory error in a test run.
"""

import os
import platform

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("ATARI_AGENT_DEBUG_BUILD", "") not in ("", "0")
X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}
# -O3 lets gcc vectorise the byte-wise max and row sums. No -march flag on the portable modules,
# so a build runs on any CPU of its architecture; AVX2 lives in its own module, picked at run time.
base_args = ["-O0", "-g"] if DEBUG else ["-O3"]
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]


def ext(name: str, source: str, extra: list[str] | None = None) -> Extension:
    return Extension(
        name,
        [source],
        include_dirs=[np.get_include(), "native"],
        define_macros=macros,
        extra_compile_args=base_args + (extra or []),
    )


extensions = [
    ext("agent._frames", "native/frames.pyx"),
    ext("agent._replay", "native/replay.pyx"),
    ext("agent._pool", "native/pool.pyx"),
]
if X86:
    extensions.append(ext("agent._frames_avx2", "native/frames_avx2.pyx", ["-mavx2", "-mfma"]))
    # AVX-512 only where the intrinsics are written; gcc's own vectorising stays at 256 bits
    # (its 512-bit loops measured slower here).
    extensions.append(ext("agent._frames_avx512", "native/frames_avx512.pyx",
                          ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vbmi",
                           "-mprefer-vector-width=256"]))

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        include_path=["native"],
        build_dir="build/cython",
    ),
)
