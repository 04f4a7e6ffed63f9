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

_frame_impl = _frames
if _frames.cpu_has_avx2_fma():
    try:
        if _frames.cpu_has_avx512_vbmi():
            from agent import _frames_avx512 as _frame_impl
        else:
            from agent import _frames_avx2 as _frame_impl
    except ImportError:  # built on a machine without the x86-64 modules
        _frame_impl = _frames

FramePreprocessor = _frame_impl.FramePreprocessor
FrameSkip = _frame_impl.FrameSkip
FRAME_KERNEL: str = _frame_impl.VARIANT
FrameReplay = _replay.FrameReplay
Batch = _replay.Batch
PoolBlock = _pool.PoolBlock

__all__ = ["FRAME_KERNEL", "Batch", "FramePreprocessor", "FrameReplay", "FrameSkip", "PoolBlock"]
