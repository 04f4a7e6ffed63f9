"""The frame kernel's palette-index path: ALE's palette indices in, the RGB path's frames out."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_frames import BUILDS, close_to_opencv, opencv_pipeline, random_walk_screens

# yars_revenge shows all 128 colours of the NTSC palette within a few thousand frames
GAMES = ["phoenix", "breakout", "pong", "seaquest", "yars_revenge"]


def within_one(x: np.ndarray, y: np.ndarray) -> None:
    assert np.abs(x.astype(int) - y.astype(int)).max() <= 1


@pytest.fixture(scope="module")
def screen_pairs():
    """Consecutive screens of several games, each read as palette indices and as RGB."""
    return random_walk_screens(GAMES, 5, 12, (20, 200),
                               lambda ale: (ale.getScreen(), ale.getScreenRGB()))


def load(p, slot: int, index: np.ndarray, rgb: np.ndarray) -> None:
    if not p.screen(slot, index):
        p.learn_palette(slot, rgb)


@pytest.mark.parametrize("build", BUILDS)
def test_real_screens_match_the_rgb_path_and_opencv(build, screen_pairs):
    p = build.FramePreprocessor()
    out, rgb_out = np.empty((84, 84), np.uint8), np.empty((84, 84), np.uint8)
    for game, pairs in screen_pairs.items():
        for (ia, ra), (ib, rb) in pairs:
            load(p, 0, ia, ra)
            load(p, 1, ib, rb)
            assert p.screen(0, ia) and p.screen(1, ib)  # learned: covered now
            assert p.indexed(0, 1, out) is out
            within_one(out, p(ra, rb, rgb_out))
            close_to_opencv(out, opencv_pipeline(ra, rb))
            assert out.std() > 0, game
        learned, known = p.palette
        for (ia, ra), _ in pairs:  # every learned colour is ALE's
            assert np.array_equal(learned[ia], ra)
        assert known.sum() == p.colours
    assert p.colours >= 64  # yars_revenge's screens brought many of the 128 colours


@pytest.mark.parametrize("build", BUILDS)
def test_a_screen_is_read_from_ale_directly(build):
    from ale_py import ALEInterface, LoggerMode, roms

    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.loadROM(roms.get_rom_path("phoenix"))
    for _ in range(100):
        ale.act(ale.getMinimalActionSet()[2])
    p = build.FramePreprocessor()
    assert not p.screen(1, ale.getScreen)  # nothing learned yet
    assert np.array_equal(p.index_frames[1], ale.getScreen())
    assert p.learn_palette(1, ale.getScreenRGB()) == len(np.unique(ale.getScreen()))
    assert p.screen(1, ale.getScreen)
    close_to_opencv(p.indexed(1, 1, np.empty((84, 84), np.uint8)),
                    opencv_pipeline(ale.getScreenRGB(), ale.getScreenRGB()))


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("odd", [False, True], ids=["even-indices", "odd-indices"])
def test_random_palettes_match_opencv(build, odd):
    # Any colours, any indices: ALE's TIA emits even indices only, but the kernel must not
    # depend on that for correctness (the AVX2 build has a separate path once one is odd).
    rng = np.random.default_rng(6)
    palette = rng.integers(0, 256, (256, 3), np.uint8)
    indices = np.arange(0, 256, 1 if odd else 2, dtype=np.uint8)
    p = build.FramePreprocessor()
    out = np.empty((84, 84), np.uint8)
    for _ in range(8):
        a = rng.choice(indices, (210, 160)).astype(np.uint8)
        b = a.copy()
        change = rng.random((210, 160)) < 0.3  # frames that mostly agree, as consecutive ones do
        b[change] = rng.choice(indices, int(change.sum()))
        load(p, 0, a, palette[a])
        load(p, 1, b, palette[b])
        close_to_opencv(p.indexed(0, 1, out), opencv_pipeline(palette[a], palette[b]))


def test_builds_agree_on_indexed_frames():
    if len(BUILDS) < 2:
        pytest.skip("only one build of the frame kernel on this CPU")
    rng = np.random.default_rng(7)
    palette = rng.integers(0, 256, (256, 3), np.uint8)
    a = rng.choice(np.arange(0, 256, 2), (210, 160)).astype(np.uint8)
    b = np.where(rng.random((210, 160)) < 0.2, rng.choice(np.arange(0, 256, 2), (210, 160)), a)
    outs = []
    for build in BUILDS:
        p = build.values[0].FramePreprocessor()
        load(p, 0, a, palette[a])
        load(p, 1, b.astype(np.uint8), palette[b])
        outs.append(p.indexed(0, 1, np.empty((84, 84), np.uint8)))
    for out in outs[1:]:  # the gray path is exact integer arithmetic in every build
        assert np.array_equal(out, outs[0])


@pytest.mark.parametrize("build", BUILDS)
def test_the_stack_is_shifted_and_gets_the_new_frame(build):
    rng = np.random.default_rng(8)
    palette = rng.integers(0, 256, (256, 3), np.uint8)
    p = build.FramePreprocessor()
    a = rng.choice(np.arange(0, 256, 2), (210, 160)).astype(np.uint8)
    load(p, 0, a, palette[a])
    expected = p.indexed(0, 0, np.empty((84, 84), np.uint8))
    stack = rng.integers(0, 256, (4, 84, 84), np.uint8)
    before = stack.copy()
    assert p.indexed(0, 0, stack=stack) is None
    assert np.array_equal(stack[:3], before[1:]) and np.array_equal(stack[3], expected)
    slot = np.zeros((84, 84), np.uint8)
    assert p.indexed(0, 0, slot, stack) is slot  # a replay slot and the acting stack at once
    assert np.array_equal(slot, expected) and np.array_equal(stack[2:], [expected, expected])
    p.indexed(0, 0, stack[-1], stack)  # out may be the stack's own last frame
    assert np.array_equal(stack[-1], expected)
    with pytest.raises(ValueError, match="other than its last"):
        p.indexed(0, 0, stack[0], stack)


# ---------------------------------------------------------------- bad input
def test_an_unlearned_colour_is_refused_and_nothing_is_written():
    from agent.native import FramePreprocessor

    p = FramePreprocessor()
    frame = np.full((210, 160), 14, np.uint8)
    assert not p.screen(0, frame)
    out = np.full((84, 84), 7, np.uint8)
    stack = np.full((4, 84, 84), 9, np.uint8)
    with pytest.raises(ValueError, match="index frame 0 holds a palette index with no learned"):
        p.indexed(0, 0, out, stack)
    assert (out == 7).all() and (stack == 9).all()
    # learning one frame's colours does not vouch for the other slot
    p.learn_palette(0, np.full((210, 160, 3), 90, np.uint8))
    p.screen(1, np.full((210, 160), 16, np.uint8))
    with pytest.raises(ValueError, match="index frame 1"):
        p.indexed(0, 1, out)


def test_a_palette_conflict_is_refused_and_nothing_is_learned():
    from agent.native import FramePreprocessor

    p = FramePreprocessor()
    frame = np.zeros((210, 160), np.uint8)
    frame[100:] = 2
    p.screen(0, frame)
    rgb = np.zeros((210, 160, 3), np.uint8)
    rgb[100:] = 50
    rgb[150:] = 60  # index 2 with two colours: not the same screen
    with pytest.raises(ValueError, match="palette index 2 has two colours"):
        p.learn_palette(0, rgb)
    assert p.colours == 0 and not p.palette[1].any()
    rgb[150:] = 50
    assert p.learn_palette(0, rgb) == 2
    rgb[:100] = 1  # index 0 was learned black
    with pytest.raises(ValueError, match="palette index 0 has two colours"):
        p.learn_palette(0, rgb)
    assert p.colours == 2
    p.forget_palette()
    assert p.colours == 0 and not p.screen(0, frame)


@pytest.mark.parametrize("call,needle", [
    (lambda p: p.screen(2, np.zeros((210, 160), np.uint8)),
     "slot must be an index frame slot, 0 or 1, got 2"),
    (lambda p: p.screen(True, np.zeros((210, 160), np.uint8)), "got True"),
    (lambda p: p.screen(0, np.zeros((210, 161), np.uint8)), "source must be a C-contiguous uint8"),
    (lambda p: p.screen(0, np.zeros((210, 160), np.int32)), "source must be"),
    (lambda p: p.learn_palette(0, np.zeros((210, 160), np.uint8)), "rgb must be"),
    (lambda p: p.indexed(-1, 0, np.zeros((84, 84), np.uint8)), "prev must be an index frame slot"),
    (lambda p: p.indexed(0, "1", np.zeros((84, 84), np.uint8)), "cur must be"),
    (lambda p: p.indexed(0, 0), "needs out, stack or both"),
    (lambda p: p.indexed(0, 0, np.zeros((84, 83), np.uint8)), "out must be"),
    (lambda p: p.indexed(0, 0, None, np.zeros((4, 84, 83), np.uint8)), "stack must be a writable"),
])
def test_bad_arguments_raise_a_clear_error(call, needle):
    from agent.native import FramePreprocessor

    p = FramePreprocessor()
    for slot in (0, 1):
        p.screen(slot, np.zeros((210, 160), np.uint8))
        p.learn_palette(slot, np.zeros((210, 160, 3), np.uint8))
    with pytest.raises(ValueError, match=needle):
        call(p)


def test_index_frames_are_read_only_outside_the_kernel():
    from agent.native import FramePreprocessor

    p = FramePreprocessor()
    with pytest.raises(ValueError, match="read-only"):
        p.index_frames[0, 0, 0] = 1
