"""The native frame kernel against the OpenCV pipeline, on real ALE frames and random frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent import _frames
from agent.native import FramePreprocessor, runnable_frame_builds

# Every build this CPU can run: each test of a build runs for all of them. (Only these may be
# imported: an AVX-512 build dies of SIGILL at import on a CPU without AVX-512.)
BUILDS = [pytest.param(module, id=name) for name, module in runnable_frame_builds().items()]

GAMES = ["phoenix", "breakout", "pong", "space_invaders", "seaquest", "ms_pacman"]


def opencv_pipeline(a: np.ndarray, b: np.ndarray, size=(84, 84)) -> np.ndarray:
    m = np.maximum(a, b)
    if m.ndim == 3:
        m = cv2.cvtColor(m, cv2.COLOR_RGB2GRAY)
    return cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def random_walk_screens(games, seed: int, pairs: int, walk: tuple[int, int], read) -> dict:
    """Per game, `pairs` pairs of consecutive screens, each screen as `read(ale)` gives it,
    taken after a seeded random walk of `walk` (low, high) frames; the two screens of a pair
    are one random action apart."""
    from ale_py import ALEInterface, LoggerMode, roms

    ALEInterface.setLoggerMode(LoggerMode.Error)
    rng = np.random.default_rng(seed)
    out = {}
    for game in games:
        ale = ALEInterface()
        ale.setInt("random_seed", 0)
        ale.loadROM(roms.get_rom_path(game))
        actions = ale.getMinimalActionSet()
        out[game] = []
        for _ in range(pairs):
            for _ in range(int(rng.integers(*walk))):
                ale.act(actions[rng.integers(len(actions))])
                if ale.game_over():
                    ale.reset_game()
            first = read(ale)
            ale.act(actions[rng.integers(len(actions))])
            out[game].append((first, read(ale)))
    return out


@pytest.fixture(scope="module")
def ale_frames():
    """Pairs of consecutive RGB frames from several games, after a seeded random walk."""
    return random_walk_screens(GAMES, 0, 6, (20, 60), lambda ale: ale.getScreenRGB())


def close_to_opencv(ours: np.ndarray, ref: np.ndarray) -> None:
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 1, f"max difference {diff.max()}"
    # ±1 only where OpenCV rounds gray to uint8 before averaging; nearly all pixels are exact
    assert (diff == 0).mean() > 0.9


@pytest.mark.parametrize("build", BUILDS)
def test_real_frames_match_opencv(build, ale_frames):
    p = build.FramePreprocessor()
    out = np.empty((84, 84), np.uint8)
    for game, pairs in ale_frames.items():
        for a, b in pairs:
            assert p(a, b, out) is out
            close_to_opencv(out, opencv_pipeline(a, b))
            assert out.std() > 0, game  # a real picture, not a constant


@pytest.mark.parametrize("build", BUILDS)
def test_random_frames_match_opencv_rgb_and_gray(build):
    rng = np.random.default_rng(1)
    p = build.FramePreprocessor()
    out = np.empty((84, 84), np.uint8)
    for _ in range(30):
        a = rng.integers(0, 256, (210, 160, 3), np.uint8)
        b = rng.integers(0, 256, (210, 160, 3), np.uint8)
        close_to_opencv(p(a, b, out), opencv_pipeline(a, b))
        ga, gb = a[..., 0].copy(), b[..., 1].copy()
        close_to_opencv(p(ga, gb, out), opencv_pipeline(ga, gb))
    # extremes
    for value in (0, 255):
        full = np.full((210, 160, 3), value, np.uint8)
        assert np.all(p(full, full, out) == value)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("in_shape,out_shape", [
    ((210, 160), (105, 80)), ((210, 160), (64, 64)), ((210, 160), (210, 160)),
    ((250, 160), (84, 84)), ((210, 160), (40, 30)), ((100, 100), (1, 1)),
])
def test_other_sizes_match_opencv(build, in_shape, out_shape):
    rng = np.random.default_rng(2)
    p = build.FramePreprocessor(in_shape, out_shape)
    out = np.empty(out_shape, np.uint8)
    for _ in range(5):
        a = rng.integers(0, 256, (*in_shape, 3), np.uint8)
        b = rng.integers(0, 256, (*in_shape, 3), np.uint8)
        ref = opencv_pipeline(a, b, out_shape)
        assert np.abs(p(a, b, out).astype(int) - ref.astype(int)).max() <= 1


def area_average(frame: np.ndarray, out_shape) -> np.ndarray:
    """The exact area average of a gray frame, rounded half up, in NumPy integers (the weights
    of _axis_taps: integer overlaps, denominator dx * dy)."""
    (ih, iw), (oh, ow) = frame.shape, out_shape
    fy, wy, dy = _frames._axis_taps(ih, oh)
    fx, wx, dx = _frames._axis_taps(iw, ow)
    my, mx = np.zeros((oh, ih), np.int64), np.zeros((ow, iw), np.int64)
    for o in range(oh):
        my[o, fy[o]:fy[o] + wy.shape[1]] = wy[o]
    for o in range(ow):
        mx[o, fx[o]:fx[o] + wx.shape[1]] = wx[o]
    d = dx * dy
    return ((my @ frame.astype(np.int64) @ mx.T + d // 2) // d).astype(np.uint8)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("in_shape,out_shape", [
    ((210, 160), (84, 84)), ((250, 160), (84, 84)), ((97, 61), (37, 29)),
    ((210, 160), (105, 80)), ((210, 160), (210, 160)), ((100, 100), (1, 1)), ((20, 300), (7, 8)),
    ((210, 100), (84, 50)), ((30, 16), (10, 8)),
])
def test_gray_frames_are_the_exact_area_average(build, in_shape, out_shape):
    # 2-D frames take the integer path: exact, rounded half up, whichever of its passes the
    # shape gets (16-bit dense / AVX2, 64-bit scalar for 250 -> 84's denominator of 5000).
    rng = np.random.default_rng(9)
    p = build.FramePreprocessor(in_shape, out_shape)
    out = np.empty(out_shape, np.uint8)
    frames = [np.full(in_shape, 255, np.uint8), np.zeros(in_shape, np.uint8)]
    frames += [rng.integers(0, 256, in_shape, np.uint8) for _ in range(6)]
    for a, b in zip(frames, frames[1:] + frames[:1]):
        assert np.array_equal(p(a, a, out), area_average(a, out_shape))
        assert np.array_equal(p(a, b, out), area_average(np.maximum(a, b), out_shape))
    # the palette path resizes its pair-gray frame the same way
    palette = rng.integers(0, 256, (256, 3), np.uint8)
    ia = rng.choice(np.arange(0, 256, 2), in_shape).astype(np.uint8)
    ib = rng.choice(np.arange(0, 256, 2), in_shape).astype(np.uint8)
    for slot, index in ((0, ia), (1, ib)):
        if not p.screen(slot, index):
            p.learn_palette(slot, palette[index])
    m = np.maximum(palette[ia], palette[ib]).astype(np.int64)
    pair_gray = (4899 * m[..., 0] + 9617 * m[..., 1] + 1868 * m[..., 2] + 8192) >> 14
    assert np.array_equal(p.indexed(0, 1, out), area_average(pair_gray.astype(np.uint8), out_shape))


def test_max_is_taken_before_gray():
    # Red in one frame, green in the other: max per channel first gives yellow's luminance.
    a = np.zeros((210, 160, 3), np.uint8)
    b = np.zeros((210, 160, 3), np.uint8)
    a[..., 0] = 200
    b[..., 1] = 200
    out = FramePreprocessor()(a, b, np.empty((84, 84), np.uint8))
    assert np.all(out == round(0.299 * 200 + 0.587 * 200))


def test_writes_into_a_replay_slot_in_place():
    from agent.native import FrameReplay

    rb = FrameReplay(16, (84, 84), stack=4)
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (210, 160, 3), np.uint8)
    FramePreprocessor()(a, a, rb.frame_slot())
    rb.reset()
    close_to_opencv(rb.current_stack()[-1], opencv_pipeline(a, a))


def test_builds_agree():
    if len(BUILDS) < 2:
        pytest.skip("only one build of the frame kernel on this CPU")
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (210, 160, 3), np.uint8)
    b = rng.integers(0, 256, (210, 160, 3), np.uint8)
    x = _frames.FramePreprocessor()(a, b, np.empty((84, 84), np.uint8))
    y = BUILDS[1].values[0].FramePreprocessor()(a, b, np.empty((84, 84), np.uint8))
    assert np.abs(x.astype(int) - y.astype(int)).max() <= 1


# ---------------------------------------------------------------- bad input
GOOD = np.zeros((210, 160, 3), np.uint8)
OUT = np.zeros((84, 84), np.uint8)


@pytest.mark.parametrize("prev,cur,out,needle", [
    (GOOD.astype(np.float32), GOOD, OUT, "prev must be a C-contiguous uint8 array of shape"),
    (GOOD, GOOD[:, :100], OUT, "cur must be"),
    (GOOD, GOOD[::-1], OUT, r"not C-contiguous"),
    (GOOD, GOOD, np.zeros((84, 85), np.uint8), "out must be"),
    (GOOD, GOOD, np.zeros((84, 84), np.int16), "out must be"),
    (GOOD, GOOD, np.zeros((84, 84), np.uint8)[:, ::-1], "out must be"),
    (np.zeros(10, np.uint8), GOOD, OUT, "prev must be a uint8 frame"),
    ("frame", GOOD, OUT, "prev must be a uint8 frame"),
    (GOOD, np.zeros((210, 160), np.uint8), OUT, "cur must be"),
])
def test_bad_frames_raise_a_clear_error(prev, cur, out, needle):
    with pytest.raises(ValueError, match=needle):
        FramePreprocessor()(prev, cur, out)


def test_read_only_out_is_rejected():
    out = np.zeros((84, 84), np.uint8)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be a writable"):
        FramePreprocessor()(GOOD, GOOD, out)


@pytest.mark.parametrize("kw,needle", [
    (dict(out_shape=(300, 84)), "must not be larger"),
    (dict(out_shape=(0, 84)), "out_shape"),
    (dict(in_shape="big"), "in_shape"),
    (dict(in_shape=(1000, 160), out_shape=(997, 84)), "at most 257"),
])
def test_bad_shapes_raise_a_clear_error(kw, needle):
    with pytest.raises(ValueError, match=needle):
        FramePreprocessor(**kw)
