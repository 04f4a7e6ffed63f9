"""The compiled kernels, in one place: frame preprocessing, the frame-ring replay and the worker
pool's shared-memory words.

There is no pure-Python fallback: if the extension was not built, importing this module fails
with an ImportError that says how to build it. On x86-64 the frame kernel exists in three builds
of the same source: portable, AVX2 + FMA, and AVX2 + FMA with AVX-512 VBMI palette lookups; the
most capable one the CPU runs is used (``FRAME_KERNEL`` says which).
"""

try:
    from agent import _frames, _pool, _replay
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "agent's Cython extension is not built. Install the package with `pip install -e .` "
        "(or `pip install .`), which compiles native/ with Cython and a C compiler."
    ) from exc


def runnable_frame_builds() -> dict:
    """The builds of the frame kernel this CPU can run, by name ("portable", "avx2",
    "avx512"), least capable first. Import the ISA builds only through this: a module compiled
    for AVX-512 dies with SIGILL (Illegal instruction) at import on a CPU without it, before any
    check inside it could run."""
    builds = {"portable": _frames}
    if _frames.cpu_has_avx2_fma():
        try:
            from agent import _frames_avx2

            builds["avx2"] = _frames_avx2
            if _frames.cpu_has_avx512_vbmi():
                from agent import _frames_avx512

                builds["avx512"] = _frames_avx512
        except ImportError:  # built on a machine without the x86-64 modules
            pass
    return builds


_frame_impl = list(runnable_frame_builds().values())[-1]  # the most capable one

FramePreprocessor = _frame_impl.FramePreprocessor
FrameSkip = _frame_impl.FrameSkip
FRAME_KERNEL: str = _frame_impl.VARIANT
FrameReplay = _replay.FrameReplay
Batch = _replay.Batch
PoolBlock = _pool.PoolBlock

__all__ = ["FRAME_KERNEL", "Batch", "FramePreprocessor", "FrameReplay", "FrameSkip", "PoolBlock",
           "runnable_frame_builds"]
