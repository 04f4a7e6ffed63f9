"""The compiled kernels, in one place: frame preprocessing, the frame-ring replay and the worker
pool's shared-memory words.

There is no pure-Python fallback: if the extension was not built, importing this module fails
with an ImportError that says how to build it. On x86-64 the frame kernel exists in two builds of
the same source; the AVX2 + FMA one is used when the CPU has both (``FRAME_KERNEL`` says which).
"""

try:
    from agent import _frames, _pool, _replay
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "agent's Cython extension is not built. Install the package with `pip install -e .` "
        "(or `pip install .`), which compiles native/ with Cython and a C compiler."
    ) from exc

if _frames.cpu_has_avx2_fma():
    try:
        from agent import _frames_avx2 as _frame_impl
    except ImportError:  # built on a machine without the AVX2 module (not x86-64)
        _frame_impl = _frames
else:
    _frame_impl = _frames

FramePreprocessor = _frame_impl.FramePreprocessor
FRAME_KERNEL: str = _frame_impl.VARIANT
FrameReplay = _replay.FrameReplay
Batch = _replay.Batch
PoolBlock = _pool.PoolBlock

__all__ = ["FRAME_KERNEL", "Batch", "FramePreprocessor", "FrameReplay", "PoolBlock"]
