"""Chart primitives, drawn with OpenCV (no matplotlib dependency): round axis ticks, text, a grid
of panels holding lines, shaded bands and dashed vertical marks, a legend, and PNG encoding.

It knows nothing of training: agent/plot.py decides which series go in which panel and hands
over `Panel`s. Layout: panels left to right, 3 columns from a width of 1200 px (2 below); the
legend fills the grid's free cells when they hold it, else a band under the grid. Colours are
the Okabe-Ito colour-blind-safe palette (yellow last: it is faint on white), cycled past 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

BGR = tuple[int, int, int]

PALETTE_RGB = (
    (0, 114, 178),    # blue
    (213, 94, 0),     # vermillion
    (0, 158, 115),    # bluish green
    (230, 159, 0),    # orange
    (204, 121, 167),  # reddish purple
    (86, 180, 233),   # sky blue
    (0, 0, 0),        # black
    (240, 228, 66),   # yellow
)
"""Okabe & Ito (2008), reordered so the first lines get the colours most distinct on white."""

MIN_WIDTH = 480
"""Below this the tick labels of a 2-column grid no longer fit."""

TEXT: BGR = (40, 40, 40)
MUTED: BGR = (120, 120, 120)
AXIS: BGR = (90, 90, 90)
GRID: BGR = (228, 228, 228)
BAND_ALPHA = 0.2
_SHIFT = 4  # fixed-point bits for cv2 drawing: sub-pixel positions make AA curves smooth
_ONE = 1 << _SHIFT


def palette(i: int) -> BGR:
    """The i-th colour (cycled), in OpenCV's BGR order."""
    r, g, b = PALETTE_RGB[i % len(PALETTE_RGB)]
    return (b, g, r)


# ------------------------------------------------------------------------------ ticks
def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """About `target` round tick values (a 1-2-5 step times a power of ten) within [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range must be finite, got {lo}..{hi}")
    if hi <= lo:
        return [lo]
    return _multiples(lo, hi, nice_step((hi - lo) / max(target, 1)))


def _multiples(lo: float, hi: float, step: float) -> list[float]:
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    # multiply integers by the step (not accumulate) so 0.1 * 3 stays close to 0.3
    return [0.0 if k == 0 else k * step for k in range(first, last + 1)]


def nice_step(raw: float) -> float:
    """The 1, 2 or 5 times a power of ten nearest to `raw` (on a log scale)."""
    mag = 10.0 ** math.floor(math.log10(raw))
    return mag * min((1, 2, 5, 10), key=lambda c: abs(math.log(raw / mag / c)))


def format_tick(value: float, step: float) -> str:
    """A tick label with just the decimals `step` needs: 0, 200k, 1.25M, 0.05, 2e-4."""
    if abs(value) < abs(step) * 1e-6:
        return "0"
    for unit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= unit:
            text = f"{value / unit:.{_decimals(step / unit)}f}"
            if "." in text:  # 1.0M reads worse than 1M; no SI label needs trailing zeros
                text = text.rstrip("0").rstrip(".")
            return text + suffix
    if step < 1e-3:  # 0.00020 is hard to read; 2e-4 is not
        exponent = math.floor(math.log10(abs(value)) + 1e-9)
        mantissa = f"{value / 10.0 ** exponent:.{_decimals(step / 10.0 ** exponent)}f}"
        return f"{mantissa}e{exponent}"
    return f"{value:.{_decimals(step)}f}"


def format_number(value: float) -> str:
    """`value` in a tick's style with 3 significant digits: 1.23M, 400, 0.05."""
    step = 10.0 ** (math.floor(math.log10(abs(value))) - 2) if value else 1.0
    return format_tick(value, step)


def _decimals(step: float) -> int:
    """Decimals that write multiples of `step` exactly: 0.25 -> 2, 0.2 -> 1, 500 -> 0."""
    for d in range(12):
        if abs(round(step, d) - step) <= 1e-9 * abs(step):
            return d
    return 12


@dataclass
class Axis:
    """A value range mapped onto pixels, linear or log10."""

    lo: float
    hi: float
    ticks: list[float]
    labels: list[str]
    log: bool = False

    def frac(self, values: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.log10(np.where(values > 0, values, np.nan)) if self.log else values
        return (v - self.lo) / (self.hi - self.lo)


def linear_axis(lo: float, hi: float, target: int, loose: bool) -> Axis:
    """Ticks over [lo, hi]; `loose` widens the range to the outer ticks (y axes)."""
    if hi <= lo:  # one value (or a flat line): centre it in a range around it
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    elif loose:  # keep curves off the frame: a margin, not below 0 for data that is not
        pad = 0.04 * (hi - lo)
        lo, hi = (lo - pad if lo < 0 or lo - pad >= 0 else 0.0), hi + pad
    step = nice_step((hi - lo) / max(target, 1))
    if loose:
        lo, hi = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    ticks = _multiples(lo, hi, step)
    return Axis(lo, hi, ticks, [format_tick(t, step) for t in ticks])


def log_axis(lo: float, hi: float, target: int) -> Axis:
    """Whole decades covering [lo, hi] (both > 0), at most about `target` of them labelled."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    last = max(last, first + 1)
    every = max(1, math.ceil((last - first) / max(target, 1)))
    decades = list(range(first, last + 1, every))
    return Axis(float(first), float(last), [float(d) for d in decades],
                [format_tick(10.0 ** d, 10.0 ** d) for d in decades], log=True)


def use_log_scale(values: np.ndarray) -> bool:
    """Whether a log y axis suits `values`: every finite one is > 0 and max / min exceeds 100
    (more than 2 decades)."""
    v = values[np.isfinite(values)]
    return bool(v.size) and bool((v > 0).all()) and float(v.max()) > 100.0 * float(v.min())


def y_axis(values: np.ndarray, target: int, fixed: tuple[float, float] | None = None,
           log: bool = False) -> Axis | None:
    """The y axis for `values` (NaN ignored): log decades when `log` and every value is > 0, else
    the `fixed` range, else the data's range with a margin; None when there is nothing to show."""
    values = values[np.isfinite(values)]
    if log and values.size and (values > 0).all():
        return log_axis(float(values.min()), float(values.max()), target)
    if fixed is not None:
        return linear_axis(*fixed, target, loose=False)
    if values.size == 0:
        return None
    return linear_axis(float(values.min()), float(values.max()), target, loose=True)


# ------------------------------------------------------------------------------ text
class Font:
    """Text in pixels. OpenCV 5's embedded TrueType font when present (anti-aliased, ordinary
    zeros); the Hershey vector font of OpenCV 4 otherwise (ASCII only).

    Neither font has a Δ (the TrueType one draws '?' in its place, as it does for any glyph it
    lacks), and the metrics say ClipΔ as the training table does: so Δ is drawn here, as a
    triangle of the font's cap height, by either font.
    """

    _DELTA = "Δ"

    def __init__(self) -> None:
        try:
            self.face = cv2.FontFace("uni")
        except (AttributeError, cv2.error):
            self.face = None

    def _ascii(self, text: str) -> str:
        text = text.replace("—", "-").replace("…", "...")
        return text.encode("ascii", "replace").decode()

    def _hershey_scale(self, px: int) -> float:
        return cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_SIMPLEX, max(1, round(0.7 * px)))

    def _run_width(self, text: str, px: int) -> int:
        """Width of text without a Δ, as the font draws it."""
        if not text:
            return 0
        if self.face is not None:
            return int(cv2.getTextSize((0, 0), text, (0, 0), self.face, px)[2])
        return int(cv2.getTextSize(self._ascii(text), cv2.FONT_HERSHEY_SIMPLEX,
                                   self._hershey_scale(px), 1)[0][0])

    def _delta_width(self, px: int) -> int:
        return round(0.72 * px)  # a capital A's advance in the TrueType font

    def width(self, text: str, px: int) -> int:
        runs = text.split(self._DELTA)
        return sum(self._run_width(r, px) for r in runs) + (len(runs) - 1) * self._delta_width(px)

    def draw(self, img: np.ndarray, text: str, x: float, y: float, px: int,
             color: BGR = TEXT, align: str = "left") -> None:
        """`y` is the baseline; `align` says where `x` is: left, center or right of the text."""
        if align != "left":
            x -= self.width(text, px) / (2 if align == "center" else 1)
        for i, run in enumerate(text.split(self._DELTA)):
            if i:
                self._draw_delta(img, x, y, px, color)
                x += self._delta_width(px)
            if run:
                self._draw_run(img, run, round(x), round(y), px, color)
                x += self._run_width(run, px)

    def _draw_run(self, img: np.ndarray, text: str, x: int, y: int, px: int,
                  color: BGR) -> None:
        if self.face is not None:
            cv2.putText(img, text, (x, y), color, self.face, px)
        else:
            cv2.putText(img, self._ascii(text), (x, y), cv2.FONT_HERSHEY_SIMPLEX,
                        self._hershey_scale(px), color, 1, cv2.LINE_AA)

    def _draw_delta(self, img: np.ndarray, x: float, y: float, px: int, color: BGR) -> None:
        # proportions of the TrueType font's capitals: ink from 0.73 px above the baseline down
        # to the row above it, side bearings 0.06 px, strokes 0.06 px wide. The outline is the
        # area between two filled triangles (OpenCV leaves the inner one empty), so the stroke
        # width need not be a whole number of pixels
        base = y - 1
        outer = np.array([(x + 0.06 * px, base), (x + 0.36 * px, y - 0.73 * px),
                          (x + 0.66 * px, base)])
        sides = np.linalg.norm(np.roll(outer, -1, axis=0) - np.roll(outer, 1, axis=0), axis=1)
        centre = sides @ outer / sides.sum()  # the incentre: each corner weighted by the side
        half_perimeter = sides.sum() / 2      # facing it
        (ax, ay), (bx, by), (cx, cy) = outer
        inradius = abs((bx - ax) * (cy - ay) - (by - ay) * (cx - ax)) / 2 / half_perimeter
        inner = centre + (outer - centre) * (1 - 0.06 * px / inradius)
        cv2.fillPoly(img, [np.round(t * _ONE).astype(np.int32) for t in (outer, inner)], color,
                     cv2.LINE_AA, _SHIFT)

    def fit(self, text: str, px: int, width: int) -> str:
        """`text`, shortened with an ellipsis until it fits in `width` pixels."""
        if self.width(text, px) <= width:
            return text
        while len(text) > 1 and self.width(text + "…", px) > width:
            text = text[:-1]
        return text + "…"


# ------------------------------------------------------------------------------ what a panel holds
@dataclass
class Line:
    """A curve: y over x, NaN for a gap; a step going backwards (x decreasing) breaks it too."""

    color: BGR
    x: np.ndarray
    y: np.ndarray


@dataclass
class Band:
    """A shaded range lo..hi over x, alpha-blended under the lines."""

    color: BGR
    x: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


@dataclass
class Mark:
    """A thin dashed vertical line at `x` over the whole plot area (an event)."""

    x: float
    color: BGR
    phase: int = 0
    """Offset of the dashes in pixels, so marks of several colours at one x interleave."""


@dataclass
class Panel:
    title: str
    lines: list[Line] = field(default_factory=list)
    bands: list[Band] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    fixed: tuple[float, float] | None = None
    """y range, else from the data."""
    log: bool = False
    """Log y axis (used only when every value is > 0)."""

    def values(self) -> np.ndarray:
        """Every finite y value the panel shows (lines and bands)."""
        parts = [ln.y for ln in self.lines] + [v for b in self.bands for v in (b.lo, b.hi)]
        values = np.concatenate(parts) if parts else np.array([])
        return values[np.isfinite(values)]


@dataclass
class LegendEntry:
    text: str
    color: BGR | None
    """A line swatch in this colour; None: the key of the dashed marks, in grey."""


# ------------------------------------------------------------------------------ layout
@dataclass
class Layout:
    width: int
    height: int
    cols: int
    margin: int
    title_h: int
    pw: int  # panel cell size
    ph: int
    legend: tuple[int, int, int, int]  # x, y, w, h
    legend_cols: int
    s: float  # scale of fonts and strokes (1.0 for a 3-column 1600 px figure)

    def cell(self, i: int) -> tuple[int, int]:
        return (self.margin + (i % self.cols) * self.pw,
                self.margin + self.title_h + (i // self.cols) * self.ph)


def layout(width: int, n_panels: int, legend_labels: list[str], font: Font) -> Layout:
    cols = 3 if width >= 1200 else 2
    margin = round(width * 0.015)
    pw = (width - 2 * margin) // cols
    s = pw / 517
    ph = round(pw * 0.64)
    title_h = round(48 * s)
    rows = math.ceil(n_panels / cols)
    px, line_h = _legend_font(s)
    entry_w = max(font.width(t, px) for t in legend_labels) + round(60 * s)
    n_lines = len(legend_labels)
    free = rows * cols - n_panels
    grid_bottom = margin + title_h + rows * ph
    # the grid's empty cells, if the legend fits there (at most 3 columns of entries)
    if free:
        box_w, box_h = free * pw - round(40 * s), ph - round(50 * s)
        per_col = max(1, box_h // line_h)
        lcols = math.ceil(n_lines / per_col)
        if lcols <= 3 and entry_w <= box_w // lcols:
            x, y = margin + (n_panels % cols) * pw + round(30 * s), grid_bottom - ph
            return Layout(width, grid_bottom + margin, cols, margin, title_h, pw, ph,
                          (x, y + round(40 * s), box_w, box_h), lcols, s)
    # else a band under the grid, in as many columns as the width allows
    box_w = width - 2 * margin - round(40 * s)
    lcols = max(1, min(n_lines, box_w // max(entry_w, 1)))
    box_h = math.ceil(n_lines / lcols) * line_h
    return Layout(width, grid_bottom + box_h + round(30 * s) + margin, cols, margin, title_h,
                  pw, ph, (margin + round(30 * s), grid_bottom + round(20 * s), box_w, box_h),
                  lcols, s)


def _legend_font(s: float) -> tuple[int, int]:
    """Legend text size and line spacing, in pixels."""
    px = max(11, round(15 * s))
    return px, round(1.75 * px)


# ------------------------------------------------------------------------------ drawing
def points(xs: np.ndarray, ys: np.ndarray, w: int, h: int) -> np.ndarray:
    """Fractions of the plot area -> fixed-point pixel coordinates (clamped: cv2 takes int32)."""
    px = np.clip(xs * (w - 1), -1e4, 1e4)
    py = np.clip((1.0 - ys) * (h - 1), -1e4, 1e4)
    return np.round(np.stack([px, py], axis=1) * _ONE).astype(np.int32)


def segments(x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Index runs of consecutive finite points; a gap or a step going backwards splits them."""
    idx = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if idx.size == 0:
        return []
    cut = (np.diff(idx) != 1) | (np.diff(x[idx]) < 0)
    return np.split(idx, np.flatnonzero(cut) + 1)


def dashed_vline(img: np.ndarray, x: int, y0: int, y1: int, color: BGR, phase: int, dash: int,
                 gap: int) -> None:
    # cv2 has no dashed lines: draw the dashes one by one. LINE_8, not LINE_AA: on a vertical
    # line at a whole pixel AA only smears it into faint neighbouring columns
    y = y0 + phase % (dash + gap)
    while y < y1:
        cv2.line(img, (x, y), (x, min(y + dash - 1, y1)), color, 1, cv2.LINE_8)
        y += dash + gap


def draw_panel(img: np.ndarray, font: Font, lay: Layout, i: int, panel: Panel,
               x_range: tuple[float, float], x_label: str) -> None:
    """Panel `i` of the grid: title, ticks, grid lines, then bands, marks and lines on top."""
    s = lay.s
    cx, cy = lay.cell(i)
    label_px, title_px = max(10, round(13 * s)), max(11, round(17 * s))
    left = cx + round(62 * s)
    top = cy + title_px + round(16 * s)
    right = cx + lay.pw - round(18 * s)
    bottom = cy + lay.ph - 2 * label_px - round(22 * s)
    w, h = right - left, bottom - top
    ya = y_axis(panel.values(), max(3, h // 45), panel.fixed, panel.log)
    font.draw(img, font.fit(panel.title, title_px, lay.pw - round(20 * s)), left,
              cy + title_px + 2, title_px)

    # x ticks: tight range (0 .. the furthest step), so the curves use the whole width
    x0, x1 = x_range
    xa = linear_axis(x0, x1, max(2, w // 95), loose=False)
    xa.lo, xa.hi = x0, x1
    for t, text in zip(xa.ticks, xa.labels):
        x = left + round((t - x0) / (x1 - x0) * (w - 1))
        cv2.line(img, (x, top), (x, bottom), GRID, 1)
        cv2.line(img, (x, bottom), (x, bottom + round(5 * s)), AXIS, 1)
        font.draw(img, text, x, bottom + round(8 * s) + label_px, label_px, align="center")
    font.draw(img, x_label, (left + right) / 2, bottom + round(14 * s) + 2 * label_px,
              label_px, MUTED, align="center")

    if ya is not None:
        for t, text in zip(ya.ticks, ya.labels):
            y = bottom - round((t - ya.lo) / (ya.hi - ya.lo) * (h - 1))
            cv2.line(img, (left, y), (right, y), GRID, 1)
            cv2.line(img, (left - round(5 * s), y), (left, y), AXIS, 1)
            font.draw(img, text, left - round(8 * s), y + round(0.35 * label_px), label_px,
                      align="right")

    plot = img[top:bottom, left:right]  # a view: cv2 clips every curve to the plot area
    thick = max(1, round(2 * s))
    if ya is not None:
        for band in panel.bands:
            _draw_band(plot, band, xa, ya)
    # marks under the curves; on an empty panel too, where they still tell a story
    for mark in panel.marks:
        x = round(xa.frac(np.array([mark.x]))[0] * (w - 1))
        dashed_vline(plot, x, 0, h - 1, mark.color, phase=mark.phase,
                     dash=max(3, round(6 * s)), gap=max(2, round(4 * s)))
    if ya is not None:
        for line in panel.lines:
            xs, ys = xa.frac(line.x), ya.frac(line.y)
            for seg in segments(xs, ys):
                pts = points(xs[seg], ys[seg], w, h)
                if len(seg) == 1:  # a lone value between gaps would be invisible as a line
                    cv2.circle(plot, tuple(pts[0]), thick * _ONE, line.color, -1, cv2.LINE_AA,
                               _SHIFT)
                else:
                    cv2.polylines(plot, [pts], False, line.color, thick, cv2.LINE_AA, _SHIFT)
    else:
        font.draw(img, "no data yet", (left + right) / 2, (top + bottom) / 2, label_px + 2,
                  MUTED, align="center")
    cv2.rectangle(img, (left, top), (right, bottom), AXIS, 1)


def _draw_band(plot: np.ndarray, band: Band, xa: Axis, ya: Axis) -> None:
    h, w = plot.shape[:2]
    xs = xa.frac(band.x)
    lo, hi = ya.frac(band.lo), ya.frac(band.hi)
    polys = []
    for seg in segments(xs, lo + hi):  # NaN in either bound breaks the band
        upper, lower = points(xs[seg], hi[seg], w, h), points(xs[seg], lo[seg], w, h)
        polys.append(np.concatenate([upper, lower[::-1]]))
    if polys:
        # fillPoly has no alpha: fill a copy, then blend it back
        overlay = plot.copy()
        cv2.fillPoly(overlay, polys, band.color, cv2.LINE_AA, _SHIFT)
        for poly in polys:  # a one-row band has no area: its edge keeps it visible
            cv2.polylines(overlay, [poly], True, band.color, 1, cv2.LINE_AA, _SHIFT)
        cv2.addWeighted(overlay, BAND_ALPHA, plot, 1 - BAND_ALPHA, 0, dst=plot)


def draw_legend(img: np.ndarray, font: Font, lay: Layout, entries: list[LegendEntry]) -> None:
    s = lay.s
    x0, y0, box_w, _ = lay.legend
    px, line_h = _legend_font(s)
    per_col = math.ceil(len(entries) / lay.legend_cols)
    col_w = box_w // lay.legend_cols
    swatch = round(30 * s)
    for i, entry in enumerate(entries):
        x = x0 + (i // per_col) * col_w
        y = y0 + (i % per_col) * line_h + px
        mid = y - round(0.35 * px)
        if entry.color is not None:
            cv2.line(img, (x, mid), (x + swatch, mid), entry.color, max(2, round(3 * s)),
                     cv2.LINE_AA)
        else:  # the marks' key: a short dashed vertical line
            dashed_vline(img, x + swatch // 2, y - px, y + px // 4, AXIS, phase=0,
                         dash=max(3, px // 3), gap=max(2, px // 5))
        font.draw(img, font.fit(entry.text, px, col_w - swatch - round(20 * s)),
                  x + swatch + round(10 * s), y, px, MUTED if entry.color is None else TEXT)


def render(width: int, title: str, panels: list[Panel], legend: list[LegendEntry],
           x_range: tuple[float, float], x_label: str) -> np.ndarray:
    """The whole figure as a BGR image `width` pixels wide: title, panel grid (one shared x
    range), legend."""
    font = Font()
    lay = layout(width, len(panels), [e.text for e in legend], font)
    img = np.full((lay.height, lay.width, 3), 255, np.uint8)
    title_px = max(14, round(26 * lay.s))
    font.draw(img, font.fit(title, title_px, width - 2 * lay.margin),
              lay.margin + round(10 * lay.s), lay.margin + round(30 * lay.s), title_px)
    for i, panel in enumerate(panels):
        draw_panel(img, font, lay, i, panel, x_range, x_label)
    draw_legend(img, font, lay, legend)
    return img


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of a BGR image; ValueError when OpenCV cannot encode it."""
    ok, png = cv2.imencode(".png", img)
    if not ok:  # cv2 reports failure by return value, not by raising
        raise ValueError("OpenCV could not encode the image as PNG")
    return png.tobytes()
