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
    for obj in (native.FrameReplay, native.FramePreprocessor):
        assert not inspect.isfunction(obj.__init__)


def test_the_avx2_build_is_used_where_the_cpu_has_it():
    if _frames.cpu_has_avx2_fma():
        from agent import _frames_avx2

        assert is_extension(_frames_avx2)
        assert native.FRAME_KERNEL == "avx2"
        assert native.FramePreprocessor is _frames_avx2.FramePreprocessor
    else:
        assert native.FRAME_KERNEL == "portable"


def test_no_python_twin_of_the_kernels_ships():
    package = pathlib.Path(native.__file__).parent
    assert not any(package.glob("_frames*.py")) and not any(package.glob("_replay*.py"))
    assert not any(package.glob("_pool*.py"))
