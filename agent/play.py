"""Watching a saved agent play: the driver of `atari-agent play` (overlay frames to an MP4, a GIF
or a live window; see agent/overlay.py, agent/video.py and agent/window.py).

`play` drives the checkpoint's game and action set through `agent.protocol.run_episodes` itself
(the env passed to it is a thin wrapper that also draws), so episode i of seed s is the very game
an evaluation seeded s would score: same env seed, same epsilon draws, same protocol (sticky
actions, game over ends an episode, the 108,000-frame cap, up to 30 no-op frames); only the
sticky-action probability and epsilon are the caller's (0.25 and 0 by default).

Epsilon: greedy (0) by default, not the evaluation's 0.001: "watch the greedy policy" is what a
user asks for, and an evaluation draw now and then would show moves the policy never makes. What
the evaluation's epsilon is there for, a policy that stalls (a Breakout paddle that never serves)
playing on to the 30-minute cap, is handled by the stall stop instead: an episode with no reward
and no life lost for `stall_steps` agent steps (default 5 game-minutes) ends there, with a line
that says so. Pass epsilon=0.001 to watch exactly what evaluation scores.

Frames: one per agent step (each covers `frameskip` emulator frames; the panel shows the state
the agent sees and the action it picks there), plus the frame after the last step (the panel says
why the episode ended). A progress line goes to stderr while it plays (redrawn in place on a
terminal every PROGRESS_TTY_S, else a plain line every PROGRESS_LOG_S), and a summary line per
episode to `out`.

Outputs are checked before anything runs and written under a temporary name, renamed into place
once complete (agent/video.py). Acting runs on one torch thread: one observation at a time gains
nothing from more, and on a busy 2-core machine torch's default two threads took 70 ms a step
against 2.2 ms on one (scripts/bench_play.py measures a recording's phases).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
import torch

from agent import outputs
from agent.config import EnvConfig
from agent.env import AtariEnv, Step
from agent.overlay import Overlay, PanelInfo, overlay_layout
from agent.policy import LoadedAgent
from agent.protocol import PROTOCOL, Episode, run_episodes
from agent.video import GifSink, VideoSink
from agent.window import SPEED_MAX, SPEED_MIN, Quit, Window, check_display

EMULATOR_HZ = 60
"""Emulator frames per second of real play (the Atari 2600's NTSC rate)."""
SCALE_MAX = 8
STALL_FRAMES = 5 * 60 * EMULATOR_HZ
"""The default stall stop, in emulator frames (5 game-minutes; stall_steps = this / frameskip)."""
PROGRESS_TTY_S = 2.0
"""Seconds between progress redraws on a terminal."""
PROGRESS_LOG_S = 10.0
"""Seconds between progress lines elsewhere (a log file, a pipe)."""

END_GAME_OVER = "game over"
END_FRAME_CAP = "frame cap"
END_MAX_STEPS = "max steps"
END_STALL = "stall"
END_QUIT = "quit"
"""Why an episode ended (`PlayedEpisode.end`)."""


class PlayError(ValueError):
    """A play request that cannot run: a bad argument, output path or missing display."""


@dataclass
class PlayedEpisode(Episode):
    """An `Episode` (score, length) with what playback adds."""

    frames: int = 0
    """Emulator frames of the episode (reset's no-ops and FIRE included)."""
    end: str = ""
    """END_GAME_OVER, END_FRAME_CAP, END_MAX_STEPS, END_STALL or END_QUIT."""
    actions: tuple[int, ...] = ()
    """The action index taken at each step."""
    random_actions: int = 0
    """How many of them were epsilon draws."""


# ---------------------------------------------------------------------------- checks and paths
def default_video_path(agent: LoadedAgent) -> Path:
    """Where the CLI writes a video when none is named: `<run>/videos/<stem>.mp4` for a checkpoint
    in a run's checkpoints/ directory (videos stay with their run), else next to the file."""
    path = Path(agent.path)
    if path.parent.name == "checkpoints":
        return path.parent.parent / "videos" / f"{path.stem}.mp4"
    return path.parent / f"{path.stem}.mp4"


def ensure_parent(path: Path) -> Path:
    """Create `path`'s directory (e.g. a run's videos/); PlayError if that is impossible."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlayError(f"cannot create directory {path.parent} for {path}: "
                        f"{exc.strerror or exc}") from None
    return path


def check_output(path: Path | str, suffix: str, what: str) -> Path:
    """`path` as a Path if a `suffix` file can be written there, else PlayError saying why."""
    return outputs.check_output(path, suffix, what, PlayError)


def _check_args(episodes, seed, sticky, epsilon, speed, scale, max_steps, stall_steps) -> None:
    def is_int(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def is_num(v) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
            and math.isfinite(v)

    if not is_int(episodes) or episodes < 1:
        raise PlayError(f"episodes must be an int >= 1, got {episodes!r}")
    if not is_int(seed) or seed < 0:
        raise PlayError(f"seed must be a non-negative int, got {seed!r}")
    if not is_num(sticky) or not 0.0 <= sticky <= 1.0:
        raise PlayError(f"sticky (the sticky-action probability) must be in [0, 1], got "
                        f"{sticky!r}")
    if not is_num(epsilon) or not 0.0 <= epsilon <= 1.0:
        raise PlayError(f"epsilon must be in [0, 1], got {epsilon!r}")
    if not is_num(speed) or not SPEED_MIN <= speed <= SPEED_MAX:
        raise PlayError(f"speed must be in [{SPEED_MIN:g}, {SPEED_MAX:g}] (1 = real game "
                        f"speed), got {speed!r}")
    if not is_int(scale) or not 1 <= scale <= SCALE_MAX:
        raise PlayError(f"scale must be an int in [1, {SCALE_MAX}], got {scale!r}")
    if max_steps is not None and (not is_int(max_steps) or max_steps < 1):
        raise PlayError(f"max_steps must be None or an int >= 1, got {max_steps!r}")
    if stall_steps is not None and (not is_int(stall_steps) or stall_steps < 0):
        raise PlayError(f"stall_steps must be None (5 game-minutes), 0 (off) or an int >= 1, "
                        f"got {stall_steps!r}")


def _game_time(frames: int) -> str:
    """Emulator frames as game time: "5 game-minutes", "1.5 game-minutes", "20 game-seconds"."""
    seconds = frames / EMULATOR_HZ
    if seconds < 60:
        return f"{seconds:.3g} game-seconds"
    return f"{seconds / 60:.3g} game-minutes"


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- progress
class Progress:
    """The progress line on `stream`: on a terminal redrawn in place at most every
    PROGRESS_TTY_S, elsewhere a plain line every PROGRESS_LOG_S. `clock` is injectable for
    tests."""

    def __init__(self, stream: TextIO, clock=time.monotonic):
        self.stream, self.clock = stream, clock
        isatty = getattr(stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.every = PROGRESS_TTY_S if self.tty else PROGRESS_LOG_S
        self.start = self.next = 0.0
        self.shown = False
        """A redrawn line is on the terminal (cleared before other output)."""

    def begin(self) -> None:
        """An episode starts: its clock starts now, its first line is due after one interval."""
        self.start = self.clock()
        self.next = self.start + self.every

    def update(self, episode: int, episodes: int, step: int, score: float, frames: int) -> None:
        now = self.clock()
        if now < self.next:
            return
        self.next = now + self.every
        elapsed = now - self.start
        speed = frames / EMULATOR_HZ / elapsed if elapsed > 0 else 0.0
        line = (f"episode {episode}/{episodes}: step {step:,}, score {score:,.0f}, "
                f"{elapsed:.1f} s ({speed:.1f}x real time)")
        if self.tty:
            self.stream.write(f"\r{line}\x1b[K")
            self.shown = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Take a redrawn line off the terminal (before a summary line is printed)."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


# ---------------------------------------------------------------------------- playback
class _Session:
    """One play call's state: the agent, where frames go, and the episodes so far."""

    def __init__(self, agent: LoadedAgent, config: EnvConfig, episodes: int, max_steps: int | None,
                 stall_steps: int, out: TextIO, progress: Progress, scale: int,
                 video: VideoSink | None, gif: GifSink | None, window: Window | None):
        self.agent, self.config, self.episodes = agent, config, episodes
        self.max_steps, self.stall_steps = max_steps, stall_steps
        self.out, self.progress, self.scale = out, progress, scale
        self.video, self.gif, self.window = video, gif, window
        self.draw = bool(video or gif or window)
        self.results: list[PlayedEpisode] = []
        self.current: _PlaybackEnv | None = None
        self.overlays: dict[int, Overlay] = {}

    def make_env(self, env_seed: int) -> _PlaybackEnv:
        """run_episodes' env factory: the protocol env for that seed, wrapped to draw."""
        env = AtariEnv(self.config, env_seed)
        try:
            self.agent.check_actions(env.actions)
        except BaseException:
            env.close()
            raise
        self.current = _PlaybackEnv(self, env, len(self.results) + 1)
        self.progress.begin()
        return self.current

    def act(self, obs: np.ndarray) -> int:
        """run_episodes' greedy policy; keeps the Q-values for the panel (one forward pass a
        step)."""
        q = self.agent.q_values(obs)
        self.current.q = q
        return int(q.argmax())

    def overlay(self, scale: int, screen: tuple[int, int]) -> Overlay:
        if scale not in self.overlays:
            names = self.current.env.actions.names
            self.overlays[scale] = Overlay(overlay_layout(names, scale, screen), names)
        return self.overlays[scale]

    def emit(self, screen: np.ndarray, info: PanelInfo) -> None:
        """Send one frame to every output; the window may block (pacing, pause) or quit."""
        shape = screen.shape[:2]
        frame, lay = None, None
        if self.video or self.window:
            overlay = self.overlay(self.scale, shape)
            lay = overlay.lay
            frame = overlay.draw(screen, info)  # the overlay's buffer, reused next step
            if self.video:
                self.video.add(frame)
        if self.gif:
            gif_scale = max(1, self.scale // 2)
            if frame is not None and gif_scale == self.scale:
                self.gif.add(frame.copy())  # the same frame: no need to draw it twice
            else:
                overlay = self.overlay(gif_scale, shape)
                self.gif.add(overlay.draw(screen, info, np.empty_like(overlay.frame)))
        if self.window:
            self.window.show(frame, lay.screen[1])

    def record(self, episode: PlayedEpisode) -> None:
        self.results.append(episode)
        self.progress.clear()
        number = len(self.results)
        if episode.end == END_STALL:
            quiet_frames = self.stall_steps * self.config.frameskip
            print(f"episode {number} stopped at step {episode.length:,}: no reward and no life "
                  f"lost for {self.stall_steps:,} agent steps ({_game_time(quiet_frames)}); "
                  "--stall-steps 0 plays on to the frame cap", file=self.out)
        reason = {END_GAME_OVER: "game over",
                  END_FRAME_CAP: f"{self.config.max_frames:,}-frame cap",
                  END_MAX_STEPS: f"--max-steps {self.max_steps}",
                  END_STALL: f"stalled (--stall-steps {self.stall_steps})",
                  END_QUIT: "quit"}[episode.end]
        print(f"episode {number}/{self.episodes}: score {episode.score:.0f}, "
              f"{episode.length:,} steps, {episode.frames:,} frames, ended: {reason}"
              + (f" ({episode.random_actions} random actions)" if episode.random_actions
                 else ""), file=self.out, flush=True)


class _PlaybackEnv:
    """An AtariEnv as run_episodes sees it, drawing each state before the action taken there
    and ending the episode at max_steps or a stall (reported to run_episodes as truncated)."""

    def __init__(self, session: _Session, env: AtariEnv, number: int):
        self.session, self.env, self.number = session, env, number
        self.actions = env.actions
        self.q: np.ndarray | None = None
        """Q-values of the current state when the greedy policy chose (None: a random draw)."""
        self.taken: list[int] = []
        self.random = 0
        self.frames = 0
        self.quiet = 0
        """Agent steps since the last reward or life lost."""
        self.done = False

    @property
    def episode_score(self) -> float:
        return self.env.episode_score

    @property
    def episode_steps(self) -> int:
        return self.env.episode_steps

    def reset(self) -> np.ndarray:
        obs = self.env.reset()
        self.frames = self.env.ale.getEpisodeFrameNumber()
        return obs

    def step(self, action: int) -> Step:
        session = self.session
        random, q = self.q is None, self.q
        self.q = None
        if session.draw:
            if random:
                q = session.agent.q_values(self.env.observation)
            self._emit(q, action, random)
        s = self.env.step(action)
        self.taken.append(int(action))
        self.random += random
        self.frames = self.env.ale.getEpisodeFrameNumber()
        self.quiet = 0 if s.raw_reward != 0 or s.life_lost else self.quiet + 1
        steps = self.env.episode_steps
        end = END_GAME_OVER if s.terminated else END_FRAME_CAP if s.truncated else None
        if end is None and session.max_steps is not None and steps >= session.max_steps:
            end = END_MAX_STEPS
        if end is None and session.stall_steps and self.quiet >= session.stall_steps:
            end = END_STALL
        if end in (END_MAX_STEPS, END_STALL):
            s = replace(s, truncated=True)  # run_episodes stops at a truncation
        if end is not None:
            if session.draw:
                self._emit(session.agent.q_values(self.env.observation), None, False, end)
            self.finish(end)
        else:
            session.progress.update(self.number, session.episodes, steps,
                                    self.env.episode_score, self.frames)
        return s

    def _emit(self, q: np.ndarray | None, action: int | None, random: bool,
              ended: str | None = None) -> None:
        env = self.env
        label = None if ended is None else {
            END_GAME_OVER: "game over", END_FRAME_CAP: f"{env.config.max_frames:,}-frame cap",
            END_MAX_STEPS: "max steps", END_STALL: "stalled"}[ended]
        info = PanelInfo(game=env.config.game, episode=self.number,
                         episodes=self.session.episodes, score=env.episode_score,
                         lives=env.ale.lives(), frame=self.frames, step=env.episode_steps,
                         names=env.actions.names, q=q, action=action, random=random,
                         ended=label)
        self.session.emit(env.rgb(), info)

    def finish(self, end: str) -> None:
        """Record this episode (once), as it stands."""
        if self.done:
            return
        self.done = True
        self.session.record(PlayedEpisode(float(self.env.episode_score),
                                          int(self.env.episode_steps),
                                          truncated=end == END_FRAME_CAP, frames=self.frames,
                                          end=end, actions=tuple(self.taken),
                                          random_actions=self.random))

    def close(self) -> None:
        self.env.close()


def play(agent: LoadedAgent, *, episodes: int = 1, seed: int = 0, sticky: float = 0.25,
         epsilon: float = 0.0, video: Path | None = None, gif: Path | None = None,
         window: bool = False, speed: float = 1.0, scale: int = 3, max_steps: int | None = None,
         stall_steps: int | None = None, out: TextIO | None = None,
         progress: TextIO | None = None) -> list[Episode]:
    """Play `episodes` games with the agent and return them (`PlayedEpisode`s).

    Greedy unless `epsilon` > 0 (drawn from the evaluation's seeded RNG); `sticky` is ALE's
    repeat-action probability. Episode i is the game `run_episodes(..., seed, epsilon)` plays.
    Frames go to `video` (.mp4, real speed at speed 1), `gif` (.gif, at half `scale`) and/or
    a live `window` (keys: space, n, +, -, q/Esc; quitting returns the episodes so far plus
    the partial one). `max_steps` caps agent steps per episode; `stall_steps` ends an episode
    after that many agent steps with no reward and no life lost (None: 5 game-minutes, 0: never).
    One summary line per episode goes to `out` (default: sys.stdout), the progress line to
    `progress` (default: sys.stderr). Arguments, output paths and the display are checked
    before anything runs (PlayError); files appear only when complete.
    """
    _check_args(episodes, seed, sticky, epsilon, speed, scale, max_steps, stall_steps)
    video = None if video is None else check_output(video, ".mp4", "video")
    gif = None if gif is None else check_output(gif, ".gif", "GIF")
    if gif is not None and not hasattr(cv2, "imwriteanimation"):
        raise PlayError(f"GIF output needs OpenCV >= 4.11 (cv2.imwriteanimation); this is "
                        f"{cv2.__version__}; use --video")
    if window:
        check_display(PlayError)
    config = agent.env_config(**{**PROTOCOL, "repeat_action_probability": float(sticky)})
    if stall_steps is None:
        stall_steps = STALL_FRAMES // config.frameskip
    step_s = config.frameskip / EMULATOR_HZ
    video_sink = None if video is None else VideoSink(video, speed / step_s, PlayError)
    gif_sink = None if gif is None else GifSink(gif, 1000 * step_s / speed, PlayError)
    sinks = [s for s in (video_sink, gif_sink) if s is not None]
    progress_line = Progress(sys.stderr if progress is None else progress)
    win = None
    try:
        if window:
            win = Window(f"atari-agent play: {agent.game} ({Path(agent.path).name})", step_s,
                         float(speed))
        session = _Session(agent, config, episodes, max_steps, int(stall_steps),
                           sys.stdout if out is None else out, progress_line, scale,
                           video_sink, gif_sink, win)
        try:
            with _torch_threads(1):
                run_episodes(session.make_env, session.act, episodes, seed, epsilon)
        except Quit:
            session.current.finish(END_QUIT)
        for sink in sinks:
            sink.finish()
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    finally:
        progress_line.clear()
        if win is not None:
            win.close()
    return session.results
