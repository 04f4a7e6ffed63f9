"""The package runs the compiled Cython extension: no Python fallback exists or is used."""

import importlib.machinery
import importlib.util
import inspect
import pathlib

import pytest

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
    builds = native.runnable_frame_builds()
    assert all(is_extension(m) for m in builds.values())
    if _frames.cpu_has_avx2_fma():
        names = ["portable", "avx2", "avx512"] if _frames.cpu_has_avx512_vbmi() else \
            ["portable", "avx2"]
    else:
        assert not _frames.cpu_has_avx512_vbmi()
        names = ["portable"]
    assert list(builds) == names
    best = builds[names[-1]]
    assert native.FRAME_KERNEL == best.VARIANT
    assert native.FramePreprocessor is best.FramePreprocessor
    assert native.FrameSkip is best.FrameSkip


def test_every_build_is_compiled_where_the_cpu_cannot_run_it():
    """The ISA builds ship even where they cannot run (a wheel moves between machines); they
    are found as files, not imported (an AVX-512 module would die of SIGILL here)."""

    if not _frames.cpu_has_avx2_fma():
        pytest.skip("not an x86-64 CPU with AVX2")
    for name in ("agent._frames_avx2", "agent._frames_avx512"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin.endswith(".so"), name


def test_no_python_twin_of_the_kernels_ships():
    package = pathlib.Path(native.__file__).parent
    assert not any(package.glob("_frames*.py")) and not any(package.glob("_replay*.py"))
    assert not any(package.glob("_pool*.py"))
