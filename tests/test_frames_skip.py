"""FrameSkip: the native per-agent-step loop (act `skip` frames, read the last two screens,
preprocess), checked against the same steps done through FramePreprocessor's Python face."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_frames import BUILDS


class FakeEmulator:
    """A scripted emulator: frame t shows `screens[t]` (palette indices, RGB from `palette`),
    `act` returns `rewards[t]`, and the game is over after frame `over_at` (if given)."""

    def __init__(self, seed: int, frames: int = 64, over_at: int | None = None,
                 new_colour_every: int | None = None):
        rng = np.random.default_rng(seed)
        self.palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
        colours = rng.permutation(np.arange(0, 256, 2))
        picks = rng.integers(0, 12, (frames + 1, 210, 160))
        if new_colour_every:  # frame t also shows colour 12 + t // every in its first row
            for t in range(frames + 1):
                picks[t, 0, : 1 + t % 7] = 12 + t // new_colour_every
        self.screens = colours[picks].astype(np.uint8)
        self.rewards = rng.integers(-1, 3, frames + 1).astype(float)
        self.over_at = over_at
        self.t = 0
        self.acted: list[int] = []
        self.rgb_reads = 0

    def act(self, action) -> float:
        self.t += 1
        self.acted.append(action)
        return self.rewards[self.t]

    def game_over(self) -> bool:
        return self.over_at is not None and self.t >= self.over_at

    def get_screen(self, frame: np.ndarray) -> None:
        frame[...] = self.screens[self.t]

    def get_rgb(self) -> np.ndarray:
        self.rgb_reads += 1
        return self.palette[self.screens[self.t]]


def make(build, emu: FakeEmulator, skip: int, stack: np.ndarray):
    kernel = build.FramePreprocessor()
    return kernel, build.FrameSkip(kernel, emu.act, emu.game_over, emu.get_screen, emu.get_rgb,
                                   skip, stack)


def reference(build, emu: FakeEmulator, frames: list[int]) -> np.ndarray:
    """The frame the Python face makes of the screens shown after frames[-2] and frames[-1]."""
    p = build.FramePreprocessor()
    for slot, t in ((0, frames[-2] if len(frames) > 1 else frames[-1]), (1, frames[-1])):
        if not p.screen(slot, emu.screens[t]):
            p.learn_palette(slot, emu.palette[emu.screens[t]])
    return p.indexed(0, 1, np.empty((84, 84), np.uint8))


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("skip", [1, 2, 4])
def test_steps_act_skip_frames_and_preprocess_the_last_two(build, skip):
    emu = FakeEmulator(seed=skip)
    stack = np.zeros((4, 84, 84), np.uint8)
    _, fs = make(build, emu, skip, stack)
    out = np.empty((84, 84), np.uint8)
    for step in range(5):
        before = stack.copy()
        raw, frames, over = fs.step(step + 7, out)
        done = list(range(step * skip + 1, step * skip + skip + 1))
        assert (frames, over) == (skip, False)
        assert raw == pytest.approx(emu.rewards[done].sum())
        assert emu.acted[-skip:] == [step + 7] * skip
        want = reference(build, emu, done)
        assert np.array_equal(out, want)
        assert np.array_equal(stack[-1], want)
        assert np.array_equal(stack[:-1], before[1:])  # shifted, oldest dropped
    assert emu.rgb_reads >= 1  # the colours were learned from the emulator's RGB screen


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("every", [1, 4, 7])
def test_new_colours_on_either_screen_are_learned_before_the_frame_is_made(build, every):
    # every 4: each new colour first shows on a step's last frame, whose check is folded into
    # the kernel's pass; every 1 and 7 bring them on the second-to-last frame too.
    emu = FakeEmulator(seed=8, new_colour_every=every)
    stack = np.zeros((4, 84, 84), np.uint8)
    kernel, fs = make(build, emu, 4, stack)
    for step in range(12):
        fs.step(1)
        assert np.array_equal(stack[-1], reference(build, emu, [4 * step + 3, 4 * step + 4]))
    learned, known = kernel.palette
    read = [t for t in range(1, emu.t + 1) if t % 4 in (0, 3)]  # frames 3, 4, 7, 8, ...
    shown = np.unique(emu.screens[read])
    assert known[shown].all() and np.array_equal(learned[shown], emu.palette[shown])


@pytest.mark.parametrize("build", BUILDS)
def test_a_game_over_stops_the_frames_and_maxes_the_last_with_itself(build):
    emu = FakeEmulator(seed=3, over_at=6)
    stack = np.zeros((2, 84, 84), np.uint8)
    _, fs = make(build, emu, 4, stack)
    fs.step(0)
    raw, frames, over = fs.step(1)  # frames 5 and 6; the game ends at frame 6
    assert (frames, over) == (2, True)
    assert raw == pytest.approx(emu.rewards[5] + emu.rewards[6])
    # The second-to-last frame (7) was never reached: the newest is maxed with itself.
    assert np.array_equal(stack[-1], reference(build, emu, [6]))
    emu3, stack3 = FakeEmulator(seed=3, over_at=7), np.zeros((2, 84, 84), np.uint8)
    fs3 = make(build, emu3, 4, stack3)[1]
    fs3.step(0)
    assert fs3.step(1)[1:] == (3, True)  # the game ended on the third frame: it is the newest
    assert np.array_equal(stack3[-1], reference(build, emu3, [7]))
    emu2 = FakeEmulator(seed=3, over_at=5)
    stack2 = np.zeros((2, 84, 84), np.uint8)
    _, fs2 = make(build, emu2, 4, stack2)
    fs2.step(0)
    assert fs2.step(1)[1:] == (1, True)
    assert np.array_equal(stack2[-1], reference(build, emu2, [5]))


@pytest.mark.parametrize("build", BUILDS)
def test_bind_moves_the_stack_and_read_fills_a_slot(build):
    emu = FakeEmulator(seed=4)
    kernel, fs = make(build, emu, 4, np.zeros((4, 84, 84), np.uint8))
    other = np.zeros((3, 84, 84), np.uint8)
    fs.bind(other)
    fs.step(2)
    assert other[-1].any() and not other[:-1].any()
    fs.read(0)
    assert np.array_equal(kernel.index_frames[0], emu.screens[emu.t])
    assert kernel.screen(0, emu.screens[emu.t])  # its colours were learned


@pytest.mark.parametrize("build", BUILDS)
def test_an_emulator_error_propagates_and_nothing_is_written(build):
    emu = FakeEmulator(seed=5)

    def broken(action):
        raise RuntimeError("emulator fell over")

    stack = np.full((4, 84, 84), 9, np.uint8)
    kernel = build.FramePreprocessor()
    fs = build.FrameSkip(kernel, broken, emu.game_over, emu.get_screen, emu.get_rgb, 4, stack)
    with pytest.raises(RuntimeError, match="fell over"):
        fs.step(0)
    assert (stack == 9).all()


@pytest.mark.parametrize("build", BUILDS)
def test_bad_arguments_raise_a_clear_error(build):
    emu = FakeEmulator(seed=6)
    kernel = build.FramePreprocessor()
    stack = np.zeros((4, 84, 84), np.uint8)
    args = (emu.act, emu.game_over, emu.get_screen, emu.get_rgb)
    with pytest.raises(ValueError, match="skip must be an int >= 1"):
        build.FrameSkip(kernel, *args, 0, stack)
    with pytest.raises(ValueError, match="act must be callable"):
        build.FrameSkip(kernel, 3, *args[1:], 4, stack)
    with pytest.raises(ValueError, match="stack must be"):
        build.FrameSkip(kernel, *args, 4, np.zeros((4, 84, 83), np.uint8))
    fs = build.FrameSkip(kernel, *args, 4, stack)
    with pytest.raises(ValueError, match=r"out must be a C-contiguous uint8 array of shape "
                                         r"\(84, 84\), got uint8 array of shape \(84, 85\)"):
        fs.step(0, np.zeros((84, 85), np.uint8))
    with pytest.raises(ValueError, match="out must"):
        fs.step(0, np.zeros((84, 84), np.float32))
    read_only = np.zeros((84, 84), np.uint8)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out must"):
        fs.step(0, read_only)
    with pytest.raises(ValueError, match="one of the stack's frames"):
        fs.step(0, stack[1])
    with pytest.raises(ValueError, match="slot must be an index frame slot"):
        fs.read(2)
    assert emu.t == 0  # nothing was acted for a refused call
    fs.step(0, stack[-1])  # the stack's last frame is allowed as out
