"""Play's frame: the raw game screen scaled up, with a side panel of what the agent sees.

Each frame is the RGB screen scaled `scale` times (nearest neighbour, so pixels stay crisp) with
a dark panel to its right: game, episode, score, lives, emulator frame, the chosen action
(marked when it was a random epsilon draw) and every action's Q-value as a bar, scaled to the
min..max of that step's Q-values. `overlay_layout` sizes it; `Overlay` draws it.

Drawing is on the recording's hot path (one frame per agent step), so `Overlay` reuses one
frame buffer and draws the panel's unchanging parts (background, separator, caption, action
names, the chosen row's highlight) once per chosen action, then copies them in: a frame costs a
copy, the scaled screen and a few short texts. Colours are BGR throughout: what
cv2.VideoWriter, imshow and imwriteanimation take.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_PX = 32
"""Line height, in pixels at font scale 1, the panel allows per line of FONT (cap height 22,
descender 7, a little air)."""
MIN_LINE, MAX_LINE = 12, 28
"""Panel row height bounds (px). Below 12 the text is no longer legible: a panel that needs
more rows than the screen's height allows grows below the screen instead."""
HEADER_ROWS = 6
"""Title, score/lives, frame/step, action, the bar caption, a gap."""

BG = (24, 24, 24)
TEXT = (215, 215, 215)
DIM = (140, 140, 140)
TITLE = (255, 255, 255)
BAR = (180, 130, 70)
CHOSEN = (0, 190, 255)
RANDOM = (255, 90, 255)
ENDED = (90, 90, 255)
ROW_HIGHLIGHT = (60, 60, 60)
SEPARATOR = (90, 90, 90)
CAPTION = "Q-values, bars: min..max"


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

    def row(self, i: int) -> int:
        """The top of panel row `i`."""
        return self.pad + i * self.line


def text_width(text: str, font: float) -> int:
    """Pixels `text` takes in FONT at scale `font`."""
    return cv2.getTextSize(text, FONT, font, 1)[0][0]


def overlay_layout(names: Sequence[str], scale: int,
                   screen: tuple[int, int] = (210, 160)) -> OverlayLayout:
    """The overlay's sizes for an action set at `scale`: rows shrink to fit the screen's height
    (down to MIN_LINE), and the panel is as wide as its longest texts."""
    sh, sw = screen[0] * scale, screen[1] * scale
    rows = HEADER_ROWS + len(names)
    line = max(MIN_LINE, min(MAX_LINE, 8 * scale, sh // (rows + 1)))
    font = line / FONT_PX
    pad = max(4, line // 3)
    name_x = 2 + pad  # after the 2 px separator
    name_w = max(text_width(n, font) for n in names)
    bar_x = name_x + name_w + pad
    bar_w = 5 * line
    value_x = bar_x + bar_w + pad
    rows_w = value_x + text_width("-00000.0", font) + pad
    longest = max(names, key=len)
    header_w = name_x + max(text_width(t, font) for t in (
        "ended: 108,000-frame cap", "score 9,999,999  lives 99", "frame 108,000  step 27,000",
        f"> {longest} (random)", CAPTION, "space_invaders  ep 99/99")) + pad
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


def _bar_lengths(q: np.ndarray, width: int) -> np.ndarray:
    """Bar lengths scaled to the step's min..max; the minimum gets a 2 px stub to stay visible,
    equal values all get full bars (nothing to rank)."""
    v = q.astype(np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return np.zeros(len(q), int)
    lo, hi = v[finite].min(), v[finite].max()
    v = np.clip(np.where(np.isnan(v), lo, v), lo, hi)  # NaN ranks lowest, +-Inf at the ends
    frac = np.ones(len(q)) if hi == lo else (v - lo) / (hi - lo)
    return np.maximum(2, np.round(frac * width)).astype(int)


class Overlay:
    """Draws the frames of one layout and action set (see the module docstring)."""

    def __init__(self, lay: OverlayLayout, names: Sequence[str]):
        self.lay, self.names = lay, tuple(names)
        self.frame = np.empty((lay.height, lay.width, 3), np.uint8)
        """The buffer `draw` fills when given no `out`."""
        self._panels: dict[int | None, np.ndarray] = {}
        """The panel's unchanging parts, by chosen action (None: no row highlighted)."""
        self._row = np.empty((lay.screen[0] // lay.scale, lay.screen[1], 3), np.uint8)
        self._bgr: np.ndarray | None = None
        self._bar_h = max(2, int(lay.line * 0.6))

    def _put(self, img: np.ndarray, text: str, x: int, row_top: int,
             color: tuple[int, int, int]) -> None:
        baseline = row_top + int(self.lay.line * 0.78)
        cv2.putText(img, text, (x, baseline), FONT, self.lay.font, color, 1, cv2.LINE_AA)

    def _static_panel(self, action: int | None) -> np.ndarray:
        panel = self._panels.get(action)
        if panel is not None:
            return panel
        lay = self.lay
        panel = np.empty((lay.height, lay.panel_width, 3), np.uint8)
        panel[:] = BG
        panel[:, :2] = SEPARATOR
        self._put(panel, CAPTION, lay.name_x, lay.row(4), DIM)
        for i, name in enumerate(self.names):
            top = lay.row(HEADER_ROWS + i)
            if i == action:
                cv2.rectangle(panel, (2, top), (lay.panel_width - 1, top + lay.line - 1),
                              ROW_HIGHLIGHT, cv2.FILLED)
            self._put(panel, name, lay.name_x, top, TITLE if i == action else TEXT)
        self._panels[action] = panel
        return panel

    def _screen(self, screen_rgb: np.ndarray, out: np.ndarray) -> None:
        """The screen scaled into `out`'s top-left: a horizontal nearest-neighbour resize, then
        each row repeated `scale` times by a broadcast copy (half of a full cv2.resize's time)."""
        lay = self.lay
        (sh, sw), s = lay.screen, lay.scale
        if screen_rgb.shape != (sh // s, sw // s, 3):
            raise ValueError(f"screen must be RGB of shape {(sh // s, sw // s, 3)} for this "
                             f"layout (scale {s}), got {screen_rgb.shape}")
        if self._bgr is None:
            self._bgr = np.empty(screen_rgb.shape, np.uint8)
        cv2.cvtColor(screen_rgb, cv2.COLOR_RGB2BGR, dst=self._bgr)
        cv2.resize(self._bgr, (sw, sh // s), dst=self._row, interpolation=cv2.INTER_NEAREST)
        out[:sh, :sw].reshape(sh // s, s, sw, 3)[:] = self._row[:, None]
        if sh < lay.height:
            out[sh:, :sw] = 0

    def draw(self, screen_rgb: np.ndarray, info: PanelInfo,
             out: np.ndarray | None = None) -> np.ndarray:
        """One frame, BGR (height, width, 3), into `out` if given, else into `self.frame`
        (overwritten by the next call: copy it to keep it)."""
        lay = self.lay
        out = self.frame if out is None else out
        self._screen(screen_rgb, out)
        panel = out[:, lay.screen[1]:]
        chosen = info.action if info.ended is None else None
        np.copyto(panel, self._static_panel(chosen))
        x, put = lay.name_x, self._put
        put(panel, f"{info.game}  ep {info.episode}/{info.episodes}", x, lay.row(0), TITLE)
        put(panel, f"score {info.score:,.0f}  lives {info.lives}", x, lay.row(1), TEXT)
        put(panel, f"frame {info.frame:,}  step {info.step:,}", x, lay.row(2), TEXT)
        if info.ended is not None:
            put(panel, f"ended: {info.ended}", x, lay.row(3), ENDED)
        elif info.action is not None:
            put(panel, f"> {self.names[info.action]}" + (" (random)" if info.random else ""),
                x, lay.row(3), RANDOM if info.random else CHOSEN)
        if info.q is None:
            return out
        lengths = _bar_lengths(info.q, lay.bar_width)
        bar_h = self._bar_h
        for i, q in enumerate(info.q.tolist()):
            top = lay.row(HEADER_ROWS + i)
            is_chosen = i == chosen
            color = (RANDOM if info.random else CHOSEN) if is_chosen else BAR
            y0 = top + (lay.line - bar_h) // 2
            cv2.rectangle(panel, (lay.bar_x, y0), (lay.bar_x + int(lengths[i]) - 1,
                                                   y0 + bar_h - 1), color, cv2.FILLED)
            put(panel, _fmt_q(q), lay.value_x, top, TITLE if is_chosen else DIM)
        return out


def compose_frame(lay: OverlayLayout, screen_rgb: np.ndarray, info: PanelInfo,
                  out: np.ndarray | None = None) -> np.ndarray:
    """One overlay frame, BGR (height, width, 3), in a new array or `out`. For one frame; a
    sequence draws faster through one `Overlay`."""
    return Overlay(lay, info.names).draw(screen_rgb, info, out)
