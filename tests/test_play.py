"""Greedy playback (agent/play.py, overlay.py, video.py, window.py): recordings decoded back,
the same games as evaluation, determinism, the live window (under a private Xvfb, and with
scripted keys), output safety, the stall stop and the progress line."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

import agent.play as play_mod
import agent.video as video_mod
import agent.window as window_mod
from agent.env import AtariEnv
from agent.games import documented_actions
from agent.overlay import (
    BG,
    CHOSEN,
    HEADER_ROWS,
    MIN_LINE,
    RANDOM,
    Overlay,
    PanelInfo,
    compose_frame,
    overlay_layout,
)
from agent.play import (
    END_GAME_OVER,
    END_MAX_STEPS,
    END_QUIT,
    END_STALL,
    PlayedEpisode,
    PlayError,
    Progress,
    default_video_path,
    play,
)
from agent.policy import load_agent
from agent.protocol import episode_streams, play_episode, protocol_config
from agent.window import SPEED_MAX, SPEED_MIN, Controls

STEPS = 40


@pytest.fixture(scope="module")
def ckpt(trained_run) -> Path:
    return trained_run / "checkpoints" / "ckpt-000000000400.pt"


@pytest.fixture(scope="module")
def agent(ckpt):
    return load_agent(ckpt)


class _Stop(Exception):
    pass


def evaluation_game(agent, seed: int, index: int, steps: int, epsilon: float = 0.0):
    """Evaluation episode `index` of `seed`, stopped after `steps` steps: its actions, its first
    screen and (frame number, score) at the stop. Played by agent/evaluate.py's own seeding and
    loop (stopped by an exception)."""
    env_seed, rng = episode_streams(seed, index)
    env = AtariEnv(protocol_config(agent.config.env), env_seed)
    taken, first, at_stop = [], [], []
    reset, step = env.reset, env.step

    def recording_reset():
        obs = reset()
        first.append(env.rgb().copy())
        return obs

    def recording_step(action):
        if len(taken) == steps:
            at_stop.extend((env.ale.getEpisodeFrameNumber(), env.episode_score))
            raise _Stop
        taken.append(action)
        return step(action)

    env.reset, env.step = recording_reset, recording_step
    with pytest.raises(_Stop):
        play_episode(env, agent.act, rng, epsilon)
    return tuple(taken), first[0], tuple(at_stop)


@pytest.fixture(scope="module")
def recorded(agent, tmp_path_factory):
    """One 40-step episode recorded to an MP4 and a GIF (shared by the decoding tests)."""
    d = tmp_path_factory.mktemp("recorded")
    out = io.StringIO()
    episodes = play(agent, seed=0, max_steps=STEPS, video=d / "play.mp4", gif=d / "play.gif",
                    out=out)
    return SimpleNamespace(dir=d, video=d / "play.mp4", gif=d / "play.gif", episodes=episodes,
                           out=out.getvalue())


def decode(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps


# ---------------------------------------------------------------------------- recordings
def test_mp4_has_one_frame_per_step_plus_reset_at_real_speed_with_the_overlay(agent, recorded):
    (ep,) = recorded.episodes
    assert isinstance(ep, PlayedEpisode) and ep.length == STEPS and ep.end == END_MAX_STEPS
    frames, fps = decode(recorded.video)
    assert len(frames) == STEPS + 1
    assert fps == pytest.approx(60 / 4)  # Phoenix at frameskip 4, speed 1
    lay = overlay_layout(documented_actions("phoenix").names, 3)
    assert lay.screen == (630, 480) and lay.width == 480 + lay.panel_width
    assert frames[0].shape == (lay.height, lay.width, 3) == (630, 904, 3)

    # The game region is the reset screen of the evaluation's episode 0, scaled 3x.
    _, first_screen, _ = evaluation_game(agent, seed=0, index=0, steps=0)
    expected = cv2.cvtColor(np.kron(first_screen, np.ones((3, 3, 1), np.uint8)),
                            cv2.COLOR_RGB2BGR).astype(np.int16)
    game = frames[0][:630, :480].astype(np.int16)
    assert np.abs(game - expected).mean() < 3.0  # mp4v is lossy
    # ... and a later frame is not (the comparison can fail).
    assert np.abs(frames[-1][:630, :480].astype(np.int16) - expected).mean() > 1.5 * \
        np.abs(game - expected).mean()

    panel = frames[0][:, 480:].astype(np.int16)
    assert panel.std() > 20  # text and bars, not a flat fill
    assert np.abs(panel - np.array(BG)).mean() > 5
    chosen_pixels = np.all(np.abs(panel - np.array(CHOSEN)) < 40, axis=-1).sum()
    assert chosen_pixels > 200  # the highlighted bar of the chosen action


def test_gif_holds_the_same_frames_at_half_scale(recorded):
    ok, anim = cv2.imreadanimation(str(recorded.gif))
    assert ok
    lay = overlay_layout(documented_actions("phoenix").names, 1)  # scale 3 halved, at least 1
    assert len(anim.frames) == STEPS + 1
    assert anim.frames[0].shape[:2] == (lay.height, lay.width)
    durations = list(anim.durations)
    assert durations[0] == 70 and durations[-1] == 1000  # 66.7 ms in GIF's 10 ms units; end


def test_summary_line_per_episode(recorded):
    (ep,) = recorded.episodes
    line = recorded.out.strip()
    m = re.fullmatch(r"episode 1/1: score (\S+), (\d+) steps, ([\d,]+) frames, "
                     r"ended: --max-steps 40", line)
    assert m, line
    assert float(m[1]) == ep.score and int(m[2]) == STEPS
    assert int(m[3].replace(",", "")) == ep.frames >= 4 * STEPS


def test_no_partial_files_left_beside_the_outputs(recorded):
    assert sorted(p.name for p in recorded.dir.iterdir()) == ["play.gif", "play.mp4"]


# ---------------------------------------------------------------------------- which game
def test_episodes_are_the_games_evaluation_scores(agent):
    seed, steps = 7, 25
    played = play(agent, episodes=2, seed=seed, max_steps=steps, out=io.StringIO())
    for index, ep in enumerate(played):
        actions, _, (frames, score) = evaluation_game(agent, seed, index, steps)
        assert (ep.actions, ep.frames, ep.score) == (actions, frames, score)
    assert played[0].frames != played[1].frames  # their own no-op starts: (seed, i) matters


def test_epsilon_draws_follow_the_evaluation_stream(agent):
    seed, steps = 3, 30
    (ep,) = play(agent, seed=seed, epsilon=0.5, max_steps=steps, out=io.StringIO())
    actions, _, (frames, score) = evaluation_game(agent, seed, 0, steps, epsilon=0.5)
    assert (ep.actions, ep.frames, ep.score) == (actions, frames, score)
    assert 0 < ep.random_actions < steps


def test_same_seed_same_game_other_seed_other_game(agent, tmp_path):
    def run(seed: int, name: str) -> PlayedEpisode:
        (ep,) = play(agent, seed=seed, max_steps=60, gif=tmp_path / name, out=io.StringIO())
        return ep

    a, b = run(0, "a.gif"), run(0, "b.gif")
    run(1, "c.gif")
    assert (a.score, a.length, a.frames, a.actions) == (b.score, b.length, b.frames, b.actions)
    assert (tmp_path / "a.gif").read_bytes() == (tmp_path / "b.gif").read_bytes()
    # The greedy policy may pick the same actions on both seeds; the screens differ.
    assert (tmp_path / "a.gif").read_bytes() != (tmp_path / "c.gif").read_bytes()


# ---------------------------------------------------------------------------- overlay units
def test_screen_is_scaled_by_nearest_neighbour_and_bars_span_min_to_max():
    names = documented_actions("phoenix").names
    lay = overlay_layout(names, 2)
    screen = np.random.default_rng(0).integers(0, 256, (210, 160, 3), dtype=np.uint8)
    q = np.linspace(-1, 1, len(names)).astype(np.float32)
    info = PanelInfo("phoenix", 1, 1, 0, 5, 0, 0, names, q, action=3)
    frame = compose_frame(lay, screen, info)
    assert frame.shape == (lay.height, lay.width, 3)
    expected = cv2.cvtColor(np.kron(screen, np.ones((2, 2, 1), np.uint8)), cv2.COLOR_RGB2BGR)
    assert np.array_equal(frame[:420, :320], expected)

    panel = frame[:, 320:]

    def bar_length(i: int) -> int:
        y = lay.pad + (HEADER_ROWS + i) * lay.line + lay.line // 2
        row = panel[y, lay.bar_x:lay.bar_x + lay.bar_width + 1]
        return int(np.any(np.abs(row.astype(int) - np.array(BG)) > 30, axis=-1).sum())

    assert bar_length(len(names) - 1) == lay.bar_width  # the max: a full bar
    assert bar_length(0) == 2  # the min: a stub
    assert 0.4 < bar_length(len(names) // 2) / lay.bar_width < 0.6
    y = lay.pad + (HEADER_ROWS + 3) * lay.line + lay.line // 2
    assert np.any(np.all(panel[y] == CHOSEN, axis=-1))  # the chosen row's bar is highlighted


def test_a_random_draw_is_marked():
    names = documented_actions("phoenix").names
    lay = overlay_layout(names, 1)
    q = np.zeros(len(names), np.float32)
    screen = np.zeros((210, 160, 3), np.uint8)
    greedy = compose_frame(lay, screen, PanelInfo("phoenix", 1, 1, 0, 5, 0, 0, names, q, 2))
    drawn = compose_frame(lay, screen, PanelInfo("phoenix", 1, 1, 0, 5, 0, 0, names, q, 2,
                                                 random=True))
    assert np.all(drawn == RANDOM, axis=-1).sum() > 50
    assert np.all(greedy == RANDOM, axis=-1).sum() == 0


def test_an_overlay_reused_over_frames_draws_each_as_a_fresh_one_would():
    """Overlay keeps the panel's unchanging parts per chosen action and one frame buffer: a
    frame drawn after others (another action, a random draw, an episode's end) is the same as
    one drawn alone."""
    names = documented_actions("breakout").names
    lay = overlay_layout(names, 3)
    overlay = Overlay(lay, names)
    rng = np.random.default_rng(1)
    infos = [PanelInfo("breakout", 1, 2, 7, 4, 400, 100, names,
                       rng.normal(size=len(names)).astype(np.float32), action=a, random=r,
                       ended=e)
             for a, r, e in ((2, False, None), (5, True, None), (None, False, "game over"),
                             (2, False, None))]
    screens = rng.integers(0, 256, (len(infos), 210, 160, 3), dtype=np.uint8)
    for screen, info in zip(screens, infos):
        frame = overlay.draw(screen, info)
        assert frame is overlay.frame
        assert np.array_equal(frame, compose_frame(lay, screen, info))
    assert len(overlay._panels) == 3  # actions 2, 5 and none: drawn once each
    with pytest.raises(ValueError, match=r"screen must be RGB of shape \(210, 160, 3\)"):
        overlay.draw(screens[0][:100], infos[0])


def test_panel_of_36_actions_fits_the_screen_height_and_stays_legible():
    names = documented_actions("seaquest").names
    assert len(names) == 36
    lay = overlay_layout(names, 3)
    assert lay.height == 630 and lay.line >= MIN_LINE
    assert lay.pad + (HEADER_ROWS + 36) * lay.line <= lay.height
    small = overlay_layout(names, 1)  # the screen is too short: the panel grows below it
    assert small.line == MIN_LINE and small.height >= (HEADER_ROWS + 36) * MIN_LINE
    for each in (lay, small, overlay_layout(documented_actions("phoenix").names, 3)):
        assert each.width % 2 == 0 and each.height % 2 == 0  # MPEG-4 crops odd sizes


def test_gif_is_thinned_to_its_memory_cap(monkeypatch, tmp_path):
    def frame(i: int) -> np.ndarray:  # frame i: white column i (GIF's palette keeps that)
        f = np.zeros((8, 64, 3), np.uint8)
        f[:, i] = 255
        return f

    monkeypatch.setattr(video_mod, "GIF_MAX_BYTES", 20 * frame(0).nbytes)
    sink = video_mod.GifSink(tmp_path / "t.gif", step_ms=50.0)
    for i in range(50):
        sink.add(frame(i))
    assert len(sink.frames) < 20 and sink.stride == 4
    sink.finish()
    ok, anim = cv2.imreadanimation(str(tmp_path / "t.gif"))
    kept = [int(f[0, :, 0].argmax()) for f in anim.frames]
    assert kept == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 49]  # ends on the last
    assert list(anim.durations) == [200] * 13 + [1000]


# ---------------------------------------------------------------------------- the window
def test_keys_pause_step_change_speed_and_quit():
    c = Controls(speed=1.0)
    assert c.on_key(-1) == c
    paused = c.on_key(ord(" "))
    assert paused.paused and not paused.step
    assert paused.on_key(ord("n")).step and paused.on_key(ord(".")).step
    assert not c.on_key(ord("n")).step  # n only steps while paused
    assert paused.on_key(ord("n")).stepped() == paused
    assert not paused.on_key(ord(" ")).paused
    assert c.on_key(ord("+")).speed == 2.0 and c.on_key(ord("-")).speed == 0.5
    fast = Controls(speed=SPEED_MAX).on_key(ord("+"))
    slow = Controls(speed=SPEED_MIN).on_key(ord("-"))
    assert fast.speed == SPEED_MAX and slow.speed == SPEED_MIN
    assert c.on_key(ord("q")).quit and c.on_key(27).quit
    assert c.on_key(ord("x")) == c


class FakeGui:
    """cv2's window functions, scripted: waitKey returns `keys` in turn, then -1."""

    def __init__(self, monkeypatch, keys, close_after: int | None = None):
        self.keys, self.shown, self.close_after, self.destroyed = list(keys), 0, close_after, 0
        monkeypatch.setattr(play_mod, "check_display", lambda *a: None)
        for name, fn in (("namedWindow", lambda *a: None), ("setWindowTitle", lambda *a: None),
                         ("imshow", self.imshow), ("waitKey", self.wait_key),
                         ("getWindowProperty", self.visible),
                         ("destroyWindow", self.destroy)):
            monkeypatch.setattr(cv2, name, fn)

    def imshow(self, name, frame):
        self.shown += 1

    def wait_key(self, ms):
        time.sleep(ms / 1000)
        return self.keys.pop(0) if self.keys else -1

    def visible(self, name, prop):
        return 0.0 if self.close_after is not None and self.shown > self.close_after else 1.0

    def destroy(self, name):
        self.destroyed += 1


def test_window_pauses_steps_and_quits_with_the_partial_episode(agent, monkeypatch, tmp_path):
    gui = FakeGui(monkeypatch, [ord(" "), ord("n"), ord("n"), ord("q")])
    out = io.StringIO()
    episodes = play(agent, episodes=3, window=True, speed=SPEED_MAX,
                    video=tmp_path / "w.mp4", out=out)
    (ep,) = episodes
    assert ep.end == END_QUIT and ep.length == 2  # paused at once, two single steps, quit
    assert "episode 1/3:" in out.getvalue() and "ended: quit" in out.getvalue()
    assert gui.destroyed == 1
    frames, _ = decode(tmp_path / "w.mp4")  # a clean quit keeps what was recorded
    assert len(frames) == 3


def test_closing_the_window_quits(agent, monkeypatch):
    gui = FakeGui(monkeypatch, [], close_after=5)
    (ep,) = play(agent, window=True, speed=SPEED_MAX, out=io.StringIO())
    assert ep.end == END_QUIT and ep.length == 5 and gui.destroyed == 1


def test_window_runs_to_the_end_at_speed(agent, monkeypatch):
    FakeGui(monkeypatch, [ord("+")])
    (ep,) = play(agent, window=True, speed=SPEED_MAX / 2, max_steps=10, out=io.StringIO())
    assert ep.end == END_MAX_STEPS and ep.length == 10


def test_window_without_a_display_says_use_video(agent, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(PlayError, match="--video"):
        play(agent, window=True)
    assert not window_mod.has_display()
    monkeypatch.setenv("DISPLAY", ":7357")  # no X server behind it
    with pytest.raises(PlayError, match="no running X server"):
        play(agent, window=True)


XVFB = "/usr/bin/Xvfb"


@pytest.fixture
def xvfb_display():
    """A private Xvfb on a free display number, stopped by its pid afterwards."""
    if not os.path.exists(XVFB):
        pytest.skip(f"{XVFB} is not installed: no virtual display for the live-window test")
    for n in range(90, 130):
        if Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists():
            continue
        proc = subprocess.Popen([XVFB, f":{n}", "-screen", "0", "1280x1024x24", "-nolisten",
                                 "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None \
                and not Path(f"/tmp/.X11-unix/X{n}").exists():
            time.sleep(0.05)
        if proc.poll() is None and Path(f"/tmp/.X11-unix/X{n}").exists():
            try:
                yield f":{n}"
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            return
        if proc.poll() is None:  # never came up: stop it and try the next number
            proc.terminate()
            proc.wait(timeout=10)
    pytest.fail("could not start Xvfb on any display :90..:129")


def test_live_window_under_a_virtual_display(ckpt, xvfb_display):
    # A fresh process: Qt binds to a display once, and aborts its process if that display
    # goes away, so the pytest process never opens a real window.
    script = ("import sys\n"
              "from agent.policy import load_agent\n"
              "from agent.play import play\n"
              "(ep,) = play(load_agent(sys.argv[1]), window=True, max_steps=20, speed=100)\n"
              "print('RESULT', ep.length, ep.end)\n")
    env = {**os.environ, "DISPLAY": xvfb_display, "QT_QPA_PLATFORM": "xcb"}
    proc = subprocess.run([sys.executable, "-c", script, str(ckpt)], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RESULT 20 max steps" in proc.stdout
    assert re.search(r"episode 1/1: score \S+, 20 steps, .* ended: --max-steps 20", proc.stdout)
    assert "QFontDatabase" not in proc.stderr  # Qt's missing-fonts noise is kept off the terminal


# ---------------------------------------------------------------------------- safety
@pytest.fixture
def nothing_runs(monkeypatch):
    def no_env(*args, **kwargs):
        raise AssertionError("an env was created before the outputs were checked")

    monkeypatch.setattr(play_mod, "AtariEnv", no_env)


@pytest.mark.parametrize("kwargs, message", [
    ({"video": "missing/out.mp4"}, "does not exist"),
    ({"video": "out.avi"}, "must end in .mp4"),
    ({"gif": "out.png"}, "must end in .gif"),
    ({"gif": "missing/out.gif"}, "does not exist"),
    ({"video": "."}, "must end in .mp4"),
])
def test_bad_output_paths_fail_before_anything_runs(agent, tmp_path, nothing_runs, kwargs,
                                                    message):
    kwargs = {k: tmp_path / v for k, v in kwargs.items()}
    with pytest.raises(PlayError, match=message) as err:
        play(agent, **kwargs)
    assert str(next(iter(kwargs.values()))) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_directory_named_like_a_video_is_refused(agent, tmp_path, nothing_runs):
    (tmp_path / "x.mp4").mkdir()
    with pytest.raises(PlayError, match="is a directory"):
        play(agent, video=tmp_path / "x.mp4")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to any directory")
def test_an_unwritable_directory_is_refused(agent, tmp_path, nothing_runs):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(PlayError, match="not writable"):
        play(agent, video=locked / "x.mp4")


@pytest.mark.parametrize("kwargs, message", [
    ({"episodes": 0}, "episodes must be an int >= 1, got 0"),
    ({"seed": -1}, "seed must be a non-negative int"),
    ({"sticky": 1.5}, r"sticky .* must be in \[0, 1\], got 1.5"),
    ({"epsilon": -0.1}, r"epsilon must be in \[0, 1\]"),
    ({"speed": 0}, r"speed must be in \[0.001, 1000\]"),
    ({"scale": 9}, r"scale must be an int in \[1, 8\], got 9"),
    ({"max_steps": 0}, "max_steps must be None or an int >= 1"),
    ({"stall_steps": -1}, r"stall_steps must be None \(5 game-minutes\), 0 \(off\) or an int"),
])
def test_bad_arguments_name_the_value(agent, nothing_runs, kwargs, message):
    with pytest.raises(PlayError, match=message):
        play(agent, **kwargs)


def test_existing_outputs_are_replaced_only_at_the_end(agent, tmp_path, monkeypatch):
    video, gif = tmp_path / "v.mp4", tmp_path / "g.gif"
    video.write_bytes(b"old video")
    gif.write_bytes(b"old gif")
    q_values, seen = agent.q_values, []

    def checking_q_values(obs):
        seen.append((video.read_bytes(), gif.read_bytes()))
        return q_values(obs)

    monkeypatch.setattr(agent, "q_values", checking_q_values)
    play(agent, max_steps=5, video=video, gif=gif, out=io.StringIO())
    assert seen and all(s == (b"old video", b"old gif") for s in seen)
    assert len(decode(video)[0]) == 6
    assert cv2.imreadanimation(str(gif))[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.gif", "v.mp4"]


def test_a_failed_play_leaves_existing_files_and_no_partial_ones(agent, tmp_path, monkeypatch):
    video, gif = tmp_path / "v.mp4", tmp_path / "g.gif"
    video.write_bytes(b"old video")
    q_values, calls = agent.q_values, []

    def failing_q_values(obs):
        calls.append(1)
        if len(calls) > 6:
            raise RuntimeError("boom")
        return q_values(obs)

    monkeypatch.setattr(agent, "q_values", failing_q_values)
    with pytest.raises(RuntimeError, match="boom"):
        play(agent, max_steps=50, video=video, gif=gif, out=io.StringIO())
    assert video.read_bytes() == b"old video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_default_video_path_keeps_videos_with_their_run(tmp_path):
    in_run = SimpleNamespace(path=tmp_path / "run" / "checkpoints" / "ckpt-000000000400.pt")
    assert default_video_path(in_run) == tmp_path / "run" / "videos" / "ckpt-000000000400.mp4"
    loose = SimpleNamespace(path=tmp_path / "elsewhere" / "best.pt")
    assert default_video_path(loose) == tmp_path / "elsewhere" / "best.mp4"


# ---------------------------------------------------------------------------- stall stop, progress
def quiet_stop(agent, seed: int, actions: tuple[int, ...], stall: int) -> int | None:
    """Replays `actions` on evaluation episode 0 of `seed` with a plain AtariEnv: the step at
    which `stall` agent steps in a row have had no reward and no life lost, if any."""
    env_seed, _ = episode_streams(seed, 0)
    env = AtariEnv(protocol_config(agent.config.env), env_seed)
    env.reset()
    quiet = 0
    for n, a in enumerate(actions, 1):
        s = env.step(a)
        quiet = 0 if s.raw_reward or s.life_lost else quiet + 1
        if quiet == stall:
            return n
    return None


def test_stall_stop_ends_an_episode_with_no_reward_and_no_life_lost(agent, monkeypatch):
    import torch

    threads = torch.get_num_threads()
    seed, cap = 2, 300
    (free,) = play(agent, seed=seed, max_steps=cap, stall_steps=0, out=io.StringIO())
    assert free.end == END_MAX_STEPS and free.length == cap  # 0: no stall stop
    for stall in (12, 40):
        expected = quiet_stop(agent, seed, free.actions, stall)
        assert expected is not None and expected < cap, stall
        out = io.StringIO()
        (ep,) = play(agent, seed=seed, max_steps=cap, stall_steps=stall, out=out)
        assert ep.end == END_STALL and ep.length == expected and not ep.truncated
        assert ep.actions == free.actions[:expected]  # the same game, stopped there
        lines = out.getvalue().splitlines()
        assert lines[0] == (f"episode 1 stopped at step {expected:,}: no reward and no life lost "
                            f"for {stall} agent steps ({stall * 4 / 60:.3g} game-seconds); "
                            "--stall-steps 0 plays on to the frame cap")
        assert lines[1].endswith(f"ended: stalled (--stall-steps {stall})")
    # The default is STALL_FRAMES emulator frames of agent steps (5 game-minutes).
    monkeypatch.setattr(play_mod, "STALL_FRAMES", 12 * 4)
    (default,) = play(agent, seed=seed, max_steps=cap, out=io.StringIO())
    assert default.end == END_STALL and default.length == quiet_stop(agent, seed, free.actions, 12)
    assert torch.get_num_threads() == threads  # acting's one thread was play's only


def test_the_stall_line_says_game_minutes():
    assert play_mod._game_time(18_000) == "5 game-minutes"
    assert play_mod._game_time(5_400) == "1.5 game-minutes"
    assert play_mod._game_time(1_200) == "20 game-seconds"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_redrawn_on_a_terminal_and_logged_elsewhere():
    now = [100.0]

    def clock() -> float:
        return now[0]

    def run(stream) -> Progress:
        p = Progress(stream, clock)
        now[0] = 100.0
        p.begin()
        for t, step in ((1.0, 10), (2.5, 25), (3.0, 30), (5.0, 50), (10.0, 100), (12.0, 120)):
            now[0] = 100.0 + t
            p.update(1, 2, step, 3.0, step * 4)
        p.clear()
        return p

    log = io.StringIO()
    assert not run(log).tty
    assert log.getvalue() == "episode 1/2: step 100, score 3, 10.0 s (0.7x real time)\n"
    term = FakeTerminal()
    assert run(term).tty
    assert term.getvalue() == ("\repisode 1/2: step 25, score 3, 2.5 s (0.7x real time)\x1b[K"
                               "\repisode 1/2: step 50, score 3, 5.0 s (0.7x real time)\x1b[K"
                               "\repisode 1/2: step 100, score 3, 10.0 s (0.7x real time)\x1b[K"
                               "\repisode 1/2: step 120, score 3, 12.0 s (0.7x real time)\x1b[K"
                               "\r\x1b[K")  # cleared before the summary line


def test_play_shows_progress_on_its_own_stream(agent, monkeypatch):
    monkeypatch.setattr(play_mod, "PROGRESS_LOG_S", 0.0)  # a line every step
    out, progress = io.StringIO(), io.StringIO()
    play(agent, episodes=2, max_steps=6, out=out, progress=progress)
    lines = progress.getvalue().splitlines()
    assert len(lines) == 2 * 5  # every step but the last of each episode
    for i, line in enumerate(lines):
        episode, step = divmod(i, 5)
        assert re.fullmatch(rf"episode {episode + 1}/2: step {step + 1}, score \d+, "
                            r"\d+\.\d s \(\d+\.\dx real time\)", line), line
    assert "step 1," not in out.getvalue() and out.getvalue().count("\n") == 2


def test_play_reports_game_over(agent):
    # A random policy ends a Phoenix game in well under 108,000 frames; no outputs, so no
    # network call for the random draws.
    out = io.StringIO()
    (ep,) = play(agent, seed=1, epsilon=1.0, out=out)
    assert ep.end == END_GAME_OVER and not ep.truncated and ep.random_actions == ep.length
    assert "ended: game over" in out.getvalue()


def test_the_play_command_records_where_there_is_no_display(trained_run, tmp_path, monkeypatch,
                                                             capsys):
    import shutil

    from agent.cli import main

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    monkeypatch.delenv("DISPLAY", raising=False)
    assert main(["play", str(run), "--max-steps", "8"]) == 0  # a run dir: its latest checkpoint
    out = capsys.readouterr().out
    video = run / "videos" / "ckpt-000000000400.mp4"
    assert f"video: {video}" in out and "episode 1/1: score" in out
    assert int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT)) == 9


@pytest.mark.parametrize("args, message", [
    (["{tmp}/missing.pt"], "does not exist"),
    (["{tmp}"], "is not a run directory"),
    (["{ckpt}", "--video", "{tmp}/no/dir/v.mp4"], "does not exist"),
    (["{ckpt}", "--video", "{tmp}/v.avi"], ".mp4"),
    (["{ckpt}", "--speed", "0"], "--speed must be in"),
    (["{ckpt}", "--stall-steps", "-1"], "--stall-steps must be >= 0, got -1"),
    (["{ckpt}", "--window", "--video", "{tmp}/v.mp4"], "DISPLAY"),
])
def test_bad_play_arguments_are_one_line(trained_run, tmp_path, monkeypatch, capsys, args,
                                         message):
    from agent.cli import main

    monkeypatch.delenv("DISPLAY", raising=False)
    ckpt = trained_run / "checkpoints" / "ckpt-000000000400.pt"
    args = [a.format(tmp=tmp_path, ckpt=ckpt) for a in args]
    assert main(["play", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("atari-agent play: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())
