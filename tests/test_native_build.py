"""The package runs the compiled Cython extension: no Python fallback exists or is used."""

import importlib.machinery
import inspect
import pathlib

import agent.native as native
from agent import _frames, _pool, _replay


def is_extension(module) -> bool:
    return module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_kernels_are_compiled_extension_modules():
    assert is_extension(_frames) and is_extension(_replay) and is_extension(_pool)
    assert native.FrameReplay is _replay.FrameReplay and native.PoolBlock is _pool.PoolBlock
    assert native.FramePreprocessor.__module__.startswith("agent._frames")
    # compiled classes and functions have no Python source to show
    assert native.FrameSkip.__module__ == native.FramePreprocessor.__module__
    for obj in (native.FrameReplay, native.FramePreprocessor, native.FrameSkip):
        assert not inspect.isfunction(obj.__init__)


def test_the_most_capable_build_the_cpu_runs_is_used():
    if _frames.cpu_has_avx2_fma():
        from agent import _frames_avx2, _frames_avx512

        assert is_extension(_frames_avx2) and is_extension(_frames_avx512)
        best = _frames_avx512 if _frames.cpu_has_avx512_vbmi() else _frames_avx2
        assert native.FRAME_KERNEL == best.VARIANT
        assert native.FramePreprocessor is best.FramePreprocessor
        assert native.FrameSkip is best.FrameSkip
    else:
        assert not _frames.cpu_has_avx512_vbmi()
        assert native.FRAME_KERNEL == "portable"


def test_no_python_twin_of_the_kernels_ships():
    package = pathlib.Path(native.__file__).parent
    assert not any(package.glob("_frames*.py")) and not any(package.glob("_replay*.py"))
    assert not any(package.glob("_pool*.py"))
