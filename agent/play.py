"""Watching a saved agent play: greedy playback with an overlay, to an MP4, a GIF or a window.

`play` drives the checkpoint's game and action set through `agent.evaluate.run_episodes` itself
(the env passed to it is a thin wrapper that also draws), so episode i of seed s is the very game
an evaluation seeded s would score: same env seed, same epsilon draws, same protocol (sticky
actions, game over ends an episode, the 108,000-frame cap, up to 30 no-op frames); only the
sticky-action probability and epsilon are the caller's (greedy, 0.25 by default).

Frames: one per agent step (each covers `frameskip` emulator frames; the panel shows the state
the agent sees and the action it picks there), plus the frame after the last step (the panel says
why the episode ended). Each frame is the raw RGB screen scaled up `scale` times (nearest
neighbour, so pixels stay crisp) with a dark side panel: game, episode, score, lives, emulator
frame, the chosen action (marked when it was a random epsilon draw) and every action's Q-value
as a bar, scaled to the min..max of that step's Q-values. See `OverlayLayout` for the sizes.

Outputs are checked before anything runs and written to a hidden temporary name in the target
directory, then `os.replace`d into place once complete: a failed or interrupted play never
leaves a half file nor clobbers an existing one.
"""

from __future__ import annotations

import math
import os
import secrets
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from agent import outputs
from agent.config import EnvConfig
from agent.env import AtariEnv, Step
from agent.policy import LoadedAgent
from agent.protocol import PROTOCOL, Episode, run_episodes

EMULATOR_HZ = 60
"""Emulator frames per second of real play (the Atari 2600's NTSC rate)."""
SPEED_MIN, SPEED_MAX = 1e-3, 1e3
"""Playback speed bounds (1 = real game speed; the CLI's --speed range); the window's +/- keys
stay inside them."""
SCALE_MAX = 8
GIF_MAX_BYTES = 256 * 2**20
"""Memory a GIF's frames may hold (all frames must be in memory for `cv2.imwriteanimation`).
A longer playback is thinned: every other kept frame is dropped and the durations double, so the
GIF still covers the whole playback at a lower frame rate. A full-rate long game needs --video."""
GIF_MIN_MS = 20
"""Shortest GIF frame duration: GIF counts in 10 ms units and browsers show delays under 20 ms
as 100 ms, so faster playback drops frames instead."""
GIF_END_HOLD_MS = 1000
"""How long a GIF holds its last frame (the end of the game) before it loops."""

END_GAME_OVER = "game over"
END_FRAME_CAP = "frame cap"
END_MAX_STEPS = "max steps"
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
    """END_GAME_OVER, END_FRAME_CAP, END_MAX_STEPS or END_QUIT."""
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


def check_display() -> None:
    """PlayError unless an X display is reachable: Qt aborts the whole process when it is not.
    OpenCV's Qt build speaks only X11 (xcb); Wayland desktops serve it through XWayland."""
    display = os.environ.get("DISPLAY", "")
    if not display:
        raise PlayError("a live window needs an X display, but DISPLAY is not set; write a "
                        "video instead (--video FILE.mp4)")
    local = display[1:].split(".")[0] if display.startswith(":") else ""
    if local.isdigit() and not Path(f"/tmp/.X11-unix/X{local}").exists():
        raise PlayError(f"DISPLAY={display!r} names no running X server (no socket "
                        f"/tmp/.X11-unix/X{local}); start one or use --video FILE.mp4")


def has_display() -> bool:
    """Whether `check_display` passes: the CLI opens a window only then."""
    try:
        check_display()
    except PlayError:
        return False
    return True


def _check_args(episodes, seed, sticky, epsilon, speed, scale, max_steps) -> None:
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


# ---------------------------------------------------------------------------- the overlay
FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_PX = 32
"""Line height, in pixels at font scale 1, the panel allows per line of FONT (cap height 22,
descender 7, a little air)."""
MIN_LINE, MAX_LINE = 12, 28
"""Panel row height bounds (px). Below 12 the text is no longer legible: a panel that needs
more rows than the screen's height allows grows below the screen instead."""
HEADER_ROWS = 6
"""Title, score/lives, frame/step, action, the bar caption, a gap."""

BG = (24, 24, 24)  # BGR throughout: what VideoWriter, imshow and imwriteanimation take
TEXT = (215, 215, 215)
DIM = (140, 140, 140)
TITLE = (255, 255, 255)
BAR = (180, 130, 70)
CHOSEN = (0, 190, 255)
RANDOM = (255, 90, 255)
ENDED = (90, 90, 255)
ROW_HIGHLIGHT = (60, 60, 60)
SEPARATOR = (90, 90, 90)


@dataclass(frozen=True)
class OverlayLayout:
    """Sizes of one overlay frame (pixels). The screen sits top-left, the panel to its right."""

    scale: int
    screen: tuple[int, int]
    """The scaled screen (height, width): the raw screen times `scale`."""
    panel_width: int
    height: int
    """max(screen height, the panel's rows); even, as MPEG-4 needs."""
    line: int
    """Row height."""
    font: float
    pad: int
    name_x: int
    bar_x: int
    bar_width: int
    value_x: int

    @property
    def width(self) -> int:
        return self.screen[1] + self.panel_width

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), OpenCV's order."""
        return self.width, self.height


def _text_width(text: str, font: float) -> int:
    return cv2.getTextSize(text, FONT, font, 1)[0][0]


def overlay_layout(names: tuple[str, ...] | list[str], scale: int,
                   screen: tuple[int, int] = (210, 160)) -> OverlayLayout:
    """The overlay's sizes for an action set at `scale`: rows shrink to fit the screen's height
    (down to MIN_LINE), and the panel is as wide as its longest texts."""
    sh, sw = screen[0] * scale, screen[1] * scale
    rows = HEADER_ROWS + len(names)
    line = max(MIN_LINE, min(MAX_LINE, 8 * scale, sh // (rows + 1)))
    font = line / _FONT_PX
    pad = max(4, line // 3)
    name_x = 2 + pad  # after the 2 px separator
    name_w = max(_text_width(n, font) for n in names)
    bar_x = name_x + name_w + pad
    bar_w = 5 * line
    value_x = bar_x + bar_w + pad
    rows_w = value_x + _text_width("-00000.0", font) + pad
    longest = max(names, key=len)
    header_w = name_x + max(_text_width(t, font) for t in (
        "ended: 108,000-frame cap", "score 9,999,999  lives 99", "frame 108,000  step 27,000",
        f"> {longest} (random)", "Q-values, bars: min..max", "space_invaders  ep 99/99")) + pad
    panel_w = -(-max(rows_w, header_w) // 8) * 8
    height = max(sh, pad + rows * line + pad)
    height += height % 2
    return OverlayLayout(scale, (sh, sw), panel_w, height, line, font, pad, name_x, bar_x,
                         bar_w, value_x)


@dataclass
class PanelInfo:
    """What one frame's panel shows."""

    game: str
    episode: int
    """1-based."""
    episodes: int
    score: float
    lives: int
    frame: int
    """Emulator frame number in the episode."""
    step: int
    names: tuple[str, ...]
    q: np.ndarray | None
    action: int | None
    """The action chosen at this state; None on an episode's last frame."""
    random: bool = False
    ended: str | None = None
    """Why the episode ended, on its last frame."""


def _fmt_q(q: float) -> str:
    """At most 8 characters, so the value column's width is fixed."""
    if not math.isfinite(q):
        return f"{q}"
    a = abs(q)
    if a < 10:
        return f"{q:+.3f}"
    if a < 100:
        return f"{q:+.2f}"
    if a < 10_000:
        return f"{q:+.1f}"
    return f"{q:+.1e}"


def _put(img: np.ndarray, text: str, x: int, row_top: int, lay: OverlayLayout,
         color: tuple[int, int, int]) -> None:
    baseline = row_top + int(lay.line * 0.78)
    cv2.putText(img, text, (x, baseline), FONT, lay.font, color, 1, cv2.LINE_AA)


def _bar_lengths(q: np.ndarray, width: int) -> np.ndarray:
    """Bar lengths scaled to the step's min..max; the minimum gets a 2 px stub to stay visible,
    equal values all get full bars (nothing to rank)."""
    v = np.nan_to_num(q.astype(np.float64), nan=-np.inf)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return np.zeros(len(q), int)
    lo, hi = finite.min(), finite.max()
    v = np.clip(v, lo, hi)
    frac = np.ones(len(q)) if hi == lo else (v - lo) / (hi - lo)
    return np.maximum(2, np.round(frac * width)).astype(int)


def draw_panel(panel: np.ndarray, lay: OverlayLayout, info: PanelInfo) -> None:
    """Draw the side panel into `panel` (height, panel_width, 3) BGR, in place."""
    panel[:] = BG
    panel[:, :2] = SEPARATOR
    x = lay.name_x

    def row(i: int) -> int:
        return lay.pad + i * lay.line

    _put(panel, f"{info.game}  ep {info.episode}/{info.episodes}", x, row(0), lay, TITLE)
    _put(panel, f"score {info.score:,.0f}  lives {info.lives}", x, row(1), lay, TEXT)
    _put(panel, f"frame {info.frame:,}  step {info.step:,}", x, row(2), lay, TEXT)
    if info.ended is not None:
        _put(panel, f"ended: {info.ended}", x, row(3), lay, ENDED)
    elif info.action is not None:
        name = info.names[info.action]
        _put(panel, f"> {name}" + (" (random)" if info.random else ""), x, row(3), lay,
             RANDOM if info.random else CHOSEN)
    _put(panel, "Q-values, bars: min..max", x, row(4), lay, DIM)
    if info.q is None:
        return
    lengths = _bar_lengths(info.q, lay.bar_width)
    bar_h = max(2, int(lay.line * 0.6))
    for i, (name, q) in enumerate(zip(info.names, info.q)):
        top = row(HEADER_ROWS + i)
        chosen = i == info.action
        color = (RANDOM if info.random else CHOSEN) if chosen else BAR
        if chosen:
            cv2.rectangle(panel, (2, top), (lay.panel_width - 1, top + lay.line - 1),
                          ROW_HIGHLIGHT, cv2.FILLED)
        _put(panel, name, x, top, lay, TITLE if chosen else TEXT)
        y0 = top + (lay.line - bar_h) // 2
        cv2.rectangle(panel, (lay.bar_x, y0),
                      (lay.bar_x + int(lengths[i]) - 1, y0 + bar_h - 1),
                      color, cv2.FILLED)
        _put(panel, _fmt_q(float(q)), lay.value_x, top, lay,
             TITLE if chosen else DIM)


def compose_frame(lay: OverlayLayout, screen_rgb: np.ndarray, info: PanelInfo,
                  out: np.ndarray | None = None) -> np.ndarray:
    """One overlay frame, BGR (height, width, 3): the screen scaled up and the panel."""
    if out is None:
        out = np.empty((lay.height, lay.width, 3), np.uint8)
    sh, sw = lay.screen
    bgr = cv2.cvtColor(screen_rgb, cv2.COLOR_RGB2BGR)
    cv2.resize(bgr, (sw, sh), dst=out[:sh, :sw], interpolation=cv2.INTER_NEAREST)
    out[sh:, :sw] = 0
    draw_panel(out[:, sw:], lay, info)
    return out


# ---------------------------------------------------------------------------- outputs
def _temp_name(path: Path) -> Path:
    """A hidden name beside `path` with the same extension (OpenCV picks the format by it)."""
    return path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.partial"
                          f"{path.suffix}")


class _VideoSink:
    """MP4 (MPEG-4 Part 2, "mp4v") via cv2.VideoWriter, opened on the first frame (its size)."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.tmp = _temp_name(path)
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0

    def add(self, frame: np.ndarray) -> None:
        if self.writer is None:
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                          self.fps, (w, h))
            if not self.writer.isOpened():
                self.abort()
                raise PlayError(f"cannot write video {str(self.path)!r}: OpenCV's VideoWriter "
                                f"did not open an mp4v encoder ({w}x{h} at {self.fps:g} fps); "
                                "this OpenCV build may lack FFMPEG; try --gif")
        self.writer.write(frame)
        self.frames += 1

    def finish(self) -> None:
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        if not self.tmp.is_file() or self.tmp.stat().st_size == 0:
            self.abort()
            raise PlayError(f"writing video {str(self.path)!r} failed: the encoder produced "
                            "no data")
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)


class _GifSink:
    """An animated GIF via cv2.imwriteanimation. Frames are kept in memory (the API takes them
    all at once) within GIF_MAX_BYTES: past it, every other frame goes and durations double."""

    def __init__(self, path: Path, step_ms: float):
        self.path = path
        self.step_ms = step_ms
        self.stride = max(1, math.ceil(GIF_MIN_MS / step_ms))
        self.frames: list[np.ndarray] = []
        self.seen = 0
        self.last: np.ndarray | None = None
        self.cap: int | None = None

    def add(self, frame: np.ndarray) -> None:
        if self.cap is None:
            self.cap = max(16, GIF_MAX_BYTES // frame.nbytes)
        if self.seen % self.stride == 0:
            self.frames.append(frame)
        self.last = frame
        self.seen += 1
        if len(self.frames) >= self.cap:
            self.frames = self.frames[::2]
            self.stride *= 2

    def durations(self) -> list[int]:
        ms = max(GIF_MIN_MS, int(round(self.step_ms * self.stride / 10)) * 10)
        out = [ms] * len(self.frames)
        out[-1] = max(ms, GIF_END_HOLD_MS)
        return out

    def finish(self) -> None:
        if not self.frames:
            return
        if self.frames[-1] is not self.last:
            self.frames.append(self.last)  # always end on the game's last frame
        anim = cv2.Animation()
        anim.frames = self.frames
        anim.durations = self.durations()
        anim.loop_count = 0  # loop forever
        tmp = _temp_name(self.path)
        try:
            ok = cv2.imwriteanimation(str(tmp), anim)
            if not ok or not tmp.is_file():
                raise PlayError(f"writing GIF {str(self.path)!r} failed "
                                "(cv2.imwriteanimation returned False)")
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
            self.frames = []

    def abort(self) -> None:
        self.frames = []  # nothing on disk until finish()


# ---------------------------------------------------------------------------- the window
@dataclass(frozen=True)
class Controls:
    """The live window's state; `on_key` is the whole key map, pure so it can be tested."""

    paused: bool = False
    speed: float = 1.0
    step: bool = False
    """One step was asked for while paused."""
    quit: bool = False

    def on_key(self, key: int) -> Controls:
        """The state after `key` (a cv2.waitKey code; -1 = no key)."""
        if key < 0:
            return self
        ch = chr(key & 0xFF)
        if ch in ("q", "Q", "\x1b"):
            return replace(self, quit=True)
        if ch == " ":
            return replace(self, paused=not self.paused, step=False)
        if ch in ("n", "N", ".") and self.paused:
            return replace(self, step=True)
        if ch in ("+", "="):  # "=" is "+" without shift
            return replace(self, speed=min(SPEED_MAX, self.speed * 2))
        if ch in ("-", "_"):
            return replace(self, speed=max(SPEED_MIN, self.speed / 2))
        return self

    def stepped(self) -> Controls:
        return replace(self, step=False)


class _Quit(Exception):
    """The viewer asked to stop (q, Esc or closing the window): a clean end, not a failure."""


KEYS_HELP = "space pause/resume, n step, +/- speed, q quit"


class _Window:
    """A live OpenCV window paced at `step_s / speed` seconds per agent step."""

    def __init__(self, title: str, step_s: float, speed: float):
        self.name = title
        self.step_s = step_s
        self.controls = Controls(speed=speed)
        self.deadline: float | None = None
        # OpenCV's Qt ships no fonts and says so on every start; the overlay's text is drawn
        # by OpenCV, not Qt, so that warning is noise. A user's own rules are left alone.
        os.environ.setdefault("QT_LOGGING_RULES", "default.warning=false")
        cv2.namedWindow(self.name, cv2.WINDOW_AUTOSIZE)
        self._retitle()

    def _retitle(self) -> None:
        c = self.controls
        state = "PAUSED" if c.paused else f"{c.speed:g}x"
        cv2.setWindowTitle(self.name, f"{self.name} | {state} | {KEYS_HELP}")

    def _closed(self) -> bool:
        return cv2.getWindowProperty(self.name, cv2.WND_PROP_VISIBLE) < 1

    def show(self, frame: np.ndarray, screen_width: int) -> None:
        """Show `frame` and return when the next step is due (or stepped to); _Quit on quit."""
        cv2.imshow(self.name, _paused(frame, screen_width) if self.controls.paused else frame)
        now = time.perf_counter()
        self.deadline = max(now, (self.deadline or now) + self.step_s / self.controls.speed)
        while True:
            c = self.controls
            wait = 0.05 if c.paused else min(0.05, self.deadline - time.perf_counter())
            key = cv2.waitKey(max(1, int(wait * 1000)))
            new = c.on_key(key)
            if new.quit or self._closed():
                raise _Quit
            if new != c:
                self.controls = new
                self._retitle()
                if new.paused != c.paused:
                    cv2.imshow(self.name, _paused(frame, screen_width) if new.paused else frame)
                    self.deadline = time.perf_counter()  # resume at once
            if self.controls.paused:
                if self.controls.step:
                    self.controls = self.controls.stepped()
                    return
                continue
            if time.perf_counter() >= self.deadline:
                return

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.name)
            cv2.waitKey(1)  # lets the GUI process the close
        except cv2.error:
            pass  # already gone (closed by the viewer)


def _paused(frame: np.ndarray, width: int) -> np.ndarray:
    """`frame` with a PAUSED banner across the bottom of its first `width` columns (the game
    screen: the panel's rows stay readable while paused)."""
    shown = frame.copy()
    text = "PAUSED  space: resume  n: one step"
    h = max(16, frame.shape[0] // 24)
    font = min(h / _FONT_PX * 1.2, 0.9 * width / _text_width(text, 1.0))
    band = shown[frame.shape[0] - h - 8:, :width]
    band[:] = band // 4
    cv2.putText(shown, text, (6, frame.shape[0] - 8), FONT, font, TITLE, 1, cv2.LINE_AA)
    return shown


# ---------------------------------------------------------------------------- playback
class _Session:
    """One play call's state: the agent, where frames go, and the episodes so far."""

    def __init__(self, agent: LoadedAgent, config: EnvConfig, episodes: int, max_steps: int | None,
                 out: TextIO, scale: int, video: _VideoSink | None, gif: _GifSink | None,
                 window: _Window | None):
        self.agent, self.config, self.episodes = agent, config, episodes
        self.max_steps, self.out, self.scale = max_steps, out, scale
        self.video, self.gif, self.window = video, gif, window
        self.draw = bool(video or gif or window)
        self.results: list[PlayedEpisode] = []
        self.current: _PlaybackEnv | None = None
        self.layouts: dict[int, OverlayLayout] = {}
        self.canvas: np.ndarray | None = None

    def make_env(self, env_seed: int) -> _PlaybackEnv:
        """run_episodes' env factory: the protocol env for that seed, wrapped to draw."""
        env = AtariEnv(self.config, env_seed)
        try:
            self.agent.check_actions(env.actions)
        except BaseException:
            env.close()
            raise
        self.current = _PlaybackEnv(self, env, len(self.results) + 1)
        return self.current

    def act(self, obs: np.ndarray) -> int:
        """run_episodes' greedy policy; keeps the Q-values for the panel."""
        q = self.agent.q_values(obs)
        self.current.q = q
        return int(q.argmax())

    def layout(self, scale: int, screen: tuple[int, int]) -> OverlayLayout:
        if scale not in self.layouts:
            self.layouts[scale] = overlay_layout(self.current.env.actions.names, scale, screen)
        return self.layouts[scale]

    def emit(self, screen: np.ndarray, info: PanelInfo) -> None:
        """Send one frame to every output; the window may block (pacing, pause) or quit."""
        shape = screen.shape[:2]
        if self.video or self.window:
            lay = self.layout(self.scale, shape)
            if self.canvas is None or self.canvas.shape[:2] != (lay.height, lay.width):
                self.canvas = np.empty((lay.height, lay.width, 3), np.uint8)
            frame = compose_frame(lay, screen, info, self.canvas)
            if self.video:
                self.video.add(frame)
        if self.gif:
            gif_scale = max(1, self.scale // 2)
            if gif_scale == self.scale and (self.video or self.window):
                self.gif.add(frame.copy())  # the same frame: no need to draw it twice
            else:
                self.gif.add(compose_frame(self.layout(gif_scale, shape), screen, info))
        if self.window:
            self.window.show(frame, lay.screen[1])

    def record(self, episode: PlayedEpisode) -> None:
        self.results.append(episode)
        reason = {END_GAME_OVER: "game over",
                  END_FRAME_CAP: f"{self.config.max_frames:,}-frame cap",
                  END_MAX_STEPS: f"--max-steps {self.max_steps}",
                  END_QUIT: "quit"}[episode.end]
        print(f"episode {len(self.results)}/{self.episodes}: score {episode.score:.0f}, "
              f"{episode.length:,} steps, {episode.frames:,} frames, ended: {reason}"
              + (f" ({episode.random_actions} random actions)" if episode.random_actions
                 else ""), file=self.out, flush=True)


class _PlaybackEnv:
    """An AtariEnv as run_episodes sees it, drawing each state before the action taken there
    and ending the episode at max_steps (reported to run_episodes as truncated)."""

    def __init__(self, session: _Session, env: AtariEnv, number: int):
        self.session, self.env, self.number = session, env, number
        self.actions = env.actions
        self.q: np.ndarray | None = None
        """Q-values of the current state when the greedy policy chose (None: a random draw)."""
        self.taken: list[int] = []
        self.random = 0
        self.frames = 0
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
        random, q = self.q is None, self.q
        self.q = None
        if self.session.draw:
            if random:
                q = self.session.agent.q_values(self.env.observation)
            self._emit(q, action, random)
        s = self.env.step(action)
        self.taken.append(int(action))
        self.random += random
        self.frames = self.env.ale.getEpisodeFrameNumber()
        max_steps = self.session.max_steps
        end = END_GAME_OVER if s.terminated else END_FRAME_CAP if s.truncated else None
        if end is None and max_steps is not None and self.env.episode_steps >= max_steps:
            end, s = END_MAX_STEPS, replace(s, truncated=True)
        if end is not None:
            if self.session.draw:
                self._emit(self.session.agent.q_values(self.env.observation), None, False, end)
            self.finish(end)
        return s

    def _emit(self, q: np.ndarray | None, action: int | None, random: bool,
              ended: str | None = None) -> None:
        env = self.env
        label = None if ended is None else {
            END_GAME_OVER: "game over", END_FRAME_CAP: f"{env.config.max_frames:,}-frame cap",
            END_MAX_STEPS: "max steps"}[ended]
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
         out: TextIO | None = None) -> list[Episode]:
    """Play `episodes` games with the agent and return them (`PlayedEpisode`s).

    Greedy unless `epsilon` > 0 (drawn from the evaluation's seeded RNG); `sticky` is ALE's
    repeat-action probability. Episode i is the game `run_episodes(..., seed, epsilon)` plays.
    Frames go to `video` (.mp4, real speed at speed 1), `gif` (.gif, at half `scale`) and/or
    a live `window` (keys: space, n, +, -, q/Esc; quitting returns the episodes so far plus
    the partial one). `max_steps` caps agent steps per episode. One summary line per episode
    goes to `out` (default: sys.stdout). Arguments, output paths and the display are checked
    before anything runs (PlayError); files appear only when complete.
    """
    _check_args(episodes, seed, sticky, epsilon, speed, scale, max_steps)
    video = None if video is None else check_output(video, ".mp4", "video")
    gif = None if gif is None else check_output(gif, ".gif", "GIF")
    if gif is not None and not hasattr(cv2, "imwriteanimation"):
        raise PlayError(f"GIF output needs OpenCV >= 4.11 (cv2.imwriteanimation); this is "
                        f"{cv2.__version__}; use --video")
    if window:
        check_display()
    config = agent.env_config(**{**PROTOCOL, "repeat_action_probability": float(sticky)})
    step_s = config.frameskip / EMULATOR_HZ
    video_sink = None if video is None else _VideoSink(video, fps=speed / step_s)
    gif_sink = None if gif is None else _GifSink(gif, step_ms=1000 * step_s / speed)
    sinks = [s for s in (video_sink, gif_sink) if s is not None]
    win = None
    try:
        if window:
            win = _Window(f"atari-agent play: {agent.game} ({Path(agent.path).name})", step_s,
                          float(speed))
        session = _Session(agent, config, episodes, max_steps,
                           sys.stdout if out is None else out, scale,
                           video_sink, gif_sink, win)
        try:
            run_episodes(session.make_env, session.act, episodes, seed, epsilon)
        except _Quit:
            session.current.finish(END_QUIT)
        for sink in sinks:
            sink.finish()
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    finally:
        if win is not None:
            win.close()
    return session.results
