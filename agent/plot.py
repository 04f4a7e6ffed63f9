"""Learning curves of training runs as one PNG, drawn with OpenCV (no matplotlib dependency).

Reads RUN_DIR/metrics.jsonl (the format is agent/report.py's) of one or more runs and overlays
them, one colour per run, in a grid of panels that share the x axis (agent steps):

1. Score (score_mean100)            2. Loss (log scale when all values are > 0 and span more
3. Agree%, 0-100                       than 2 decades, else linear; the title says which)
4. Q values: q_mean line, q_min..q_max alpha-blended band
5. Gradient norm (grad_norm)        6. ClipΔ (clip_delta), 0-1.05
7-10. Greedy action share of each button (noop, ZAP, FIRE, FIRE+ZAP), 0-100 %: one panel per
      button rather than one panel with four line styles, because styles x colours stop being
      legible beyond two runs.

Panels run left to right, 3 columns from a width of 1200 px (2 below); the legend fills the
grid's free cells when they hold it, else a band under the grid. Colours are the Okabe-Ito
colour-blind-safe palette (yellow last: it is faint on white), cycled past 8 runs. Watchdog
events (divergence / rollback / halt) are thin dashed vertical lines in the run's colour on
every panel. Nulls and "nan" leave gaps; a step count going backwards (a resumed run) starts
a new line segment too, so a resume never draws a line back in time.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from agent import files
from agent.diagnostics import BUTTON_KEYS
from agent.outputs import check_output

WATCHDOG_EVENTS = ("divergence", "rollback", "halt")
"""Events drawn as dashed vertical lines; others (checkpoint, eval, ...) would only clutter."""

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
"""Okabe & Ito (2008), reordered so the first runs get the colours most distinct on white."""

MIN_WIDTH = 480
"""Below this the tick labels of a 2-column grid no longer fit."""

_TEXT = (40, 40, 40)
_MUTED = (120, 120, 120)
_AXIS = (90, 90, 90)
_GRID = (228, 228, 228)
_BAND_ALPHA = 0.2
_SHIFT = 4  # fixed-point bits for cv2 drawing: sub-pixel positions make AA curves smooth
_ONE = 1 << _SHIFT


class PlotError(ValueError):
    """A run directory, metrics file or output path that cannot be plotted; says what's expected."""


# ------------------------------------------------------------------------------ reading
def _metrics_path(run_dir: Path) -> Path:
    expected = "(expected a directory made by `atari-agent train`)"
    if not run_dir.exists():
        raise PlotError(f"{run_dir} does not exist {expected}")
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir} is not a directory {expected}")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise PlotError(f"{run_dir} is not a run directory: no metrics.jsonl {expected}")
    return path


def load_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(diagnostics rows, events) of RUN_DIR/metrics.jsonl, as written (NaN stays "nan").

    A truncated last line (no newline yet: the run is writing it) is skipped; any other line
    that is not a JSON object, or a row without a numeric `steps`, raises PlotError.
    """
    run_dir = Path(run_dir)
    path = _metrics_path(run_dir)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PlotError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    if complete:
        lines.pop()  # the empty piece after the final newline
    rows: list[dict] = []
    events: list[dict] = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both
            if number == len(lines) and not complete:
                break  # a line still being written
            raise PlotError(f"{path}, line {number}: not valid JSON ({exc}); expected one JSON "
                            "object per line as written by `atari-agent train`") from None
        if not isinstance(obj, dict):
            raise PlotError(f"{path}, line {number}: expected a JSON object, got "
                            f"{type(obj).__name__}")
        if "event" in obj:
            events.append(obj)
        elif _number(obj.get("steps")) is None:
            raise PlotError(f"{path}, line {number}: a diagnostics row without a numeric "
                            "'steps'")
        else:
            rows.append(obj)
    return rows, events


def _number(value: object) -> float | None:
    """A finite float, or None for null, "nan", inf, strings and anything else not plottable."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------ runs
@dataclass
class _Run:
    name: str
    path: Path
    color: tuple[int, int, int]  # BGR
    steps: np.ndarray
    series: dict[str, np.ndarray]  # NaN where the row has no value
    events: list[tuple[float, str]] = field(default_factory=list)  # (steps, kind)
    game: str | None = None
    state: str | None = None

    @property
    def has_data(self) -> bool:
        return any(np.isfinite(v).any() for v in self.series.values())


def _series_keys() -> tuple[str, ...]:
    return ("score_mean100", "loss", "agree", "q_min", "q_mean", "q_max", "grad_norm",
            "clip_delta", *(f"greedy:{k}" for k in BUTTON_KEYS))


def _series(rows: list[dict]) -> dict[str, np.ndarray]:
    out = {k: np.full(len(rows), np.nan) for k in _series_keys()}
    for i, row in enumerate(rows):
        for key in _series_keys()[:8]:
            v = _number(row.get(key))
            if v is not None:
                out[key][i] = v
        dist = row.get("greedy_dist")
        if isinstance(dist, dict):
            for k in BUTTON_KEYS:
                v = _number(dist.get(k))
                if v is not None:
                    out[f"greedy:{k}"][i] = 100.0 * v
    return out


def _run_names(run_dirs: list[Path]) -> list[str]:
    """Directory names; where two are equal, enough parent directories to tell them apart."""
    paths = [Path(os.path.abspath(d)) for d in run_dirs]
    parts = [p.parts[1:] or (str(p),) for p in paths]  # without the root
    depth = [1] * len(paths)

    def name(i: int) -> str:
        return "/".join(parts[i][-depth[i]:])

    while True:
        # grow the names that collide with another directory's (not the same one given twice)
        owners: dict[str, set[Path]] = {}
        for i, p in enumerate(paths):
            owners.setdefault(name(i), set()).add(p)
        grow = [i for i in range(len(paths))
                if len(owners[name(i)]) > 1 and depth[i] < len(parts[i])]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    names = [name(i) for i in range(len(paths))]
    seen: Counter[str] = Counter()
    for i, n in enumerate(names):  # the same directory given twice
        seen[n] += 1
        if seen[n] > 1:
            names[i] = f"{n} #{seen[n]}"
    return names


def _run_info(run_dir: Path) -> tuple[str | None, str | None]:
    """(game, state) from config.toml and status.json; None where unreadable, since they only
    label the legend and a run with a damaged config still has curves worth seeing."""
    game = state = None
    try:
        with open(run_dir / "config.toml", "rb") as f:
            game = str(tomllib.load(f)["env"]["game"])
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError):
        pass
    try:
        status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
        state = str(status["state"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return game, state


def _load_runs(run_dirs: list[Path]) -> list[_Run]:
    runs = []
    for i, (run_dir, name) in enumerate(zip(run_dirs, _run_names(run_dirs))):
        rows, events = load_metrics(run_dir)
        r, g, b = PALETTE_RGB[i % len(PALETTE_RGB)]
        marks = [(s, str(e["event"])) for e in events if e.get("event") in WATCHDOG_EVENTS
                 and (s := _number(e.get("steps"))) is not None]
        game, state = _run_info(Path(run_dir))
        runs.append(_Run(name=name, path=Path(run_dir), color=(b, g, r),
                         steps=np.array([float(row["steps"]) for row in rows]),
                         series=_series(rows), events=marks, game=game, state=state))
    return runs


def _legend_label(run: _Run) -> str:
    details = [run.game] if run.game else []
    if run.has_data:
        details.append(f"{format_tick(run.steps.max(), _precision(run.steps.max()))} steps")
    if run.state:
        details.append(run.state)
    if run.events:
        n = len(run.events)
        details.append(f"{n} watchdog event{'s' if n > 1 else ''}")
    label = run.name + (f": {', '.join(details)}" if details else "")
    return label if run.has_data else f"{label} (no data yet)"


def _precision(value: float) -> float:
    """A tick step that shows `value` with 3 significant digits."""
    return 10.0 ** (math.floor(math.log10(abs(value))) - 2) if value else 1.0


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


def _decimals(step: float) -> int:
    """Decimals that write multiples of `step` exactly: 0.25 -> 2, 0.2 -> 1, 500 -> 0."""
    for d in range(12):
        if abs(round(step, d) - step) <= 1e-9 * abs(step):
            return d
    return 12


@dataclass
class _Axis:
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


def _linear_axis(lo: float, hi: float, target: int, loose: bool) -> _Axis:
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
    return _Axis(lo, hi, ticks, [format_tick(t, step) for t in ticks])


def _log_axis(lo: float, hi: float, target: int) -> _Axis:
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    last = max(last, first + 1)
    every = max(1, math.ceil((last - first) / max(target, 1)))
    decades = list(range(first, last + 1, every))
    return _Axis(float(first), float(last), [float(d) for d in decades],
                 [format_tick(10.0 ** d, 10.0 ** d) for d in decades], log=True)


def use_log_scale(values: np.ndarray) -> bool:
    """Log y for loss: every value is > 0 and max / min exceeds 100 (more than 2 decades)."""
    v = values[np.isfinite(values)]
    return bool(v.size) and bool((v > 0).all()) and float(v.max()) > 100.0 * float(v.min())


# ------------------------------------------------------------------------------ text
class _Font:
    """Text in pixels. OpenCV 5's embedded TrueType font when present (anti-aliased, has Δ and
    ordinary zeros); the Hershey vector font of OpenCV 4 otherwise (ASCII only)."""

    def __init__(self) -> None:
        try:
            self.face = cv2.FontFace("uni")
        except (AttributeError, cv2.error):
            self.face = None

    def _ascii(self, text: str) -> str:
        text = text.replace("Δ", " delta").replace("—", "-").replace("…", "...")
        return text.encode("ascii", "replace").decode()

    def width(self, text: str, px: int) -> int:
        if self.face is not None:
            return int(cv2.getTextSize((0, 0), text, (0, 0), self.face, px)[2])
        scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_SIMPLEX, max(1, round(0.7 * px)))
        return int(cv2.getTextSize(self._ascii(text), cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0])

    def draw(self, img: np.ndarray, text: str, x: float, y: float, px: int,
             color: tuple[int, int, int] = _TEXT, align: str = "left") -> None:
        """`y` is the baseline; `align` says where `x` is: left, center or right of the text."""
        if align != "left":
            x -= self.width(text, px) / (2 if align == "center" else 1)
        org = (round(x), round(y))
        if self.face is not None:
            cv2.putText(img, text, org, color, self.face, px)
        else:
            scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_SIMPLEX, max(1, round(0.7 * px)))
            cv2.putText(img, self._ascii(text), org, cv2.FONT_HERSHEY_SIMPLEX, scale, color,
                        1, cv2.LINE_AA)

    def fit(self, text: str, px: int, width: int) -> str:
        """`text`, shortened with an ellipsis until it fits in `width` pixels."""
        if self.width(text, px) <= width:
            return text
        while len(text) > 1 and self.width(text + "…", px) > width:
            text = text[:-1]
        return text + "…"


# ------------------------------------------------------------------------------ panels
@dataclass(frozen=True)
class _Panel:
    key: str
    title: str
    fixed: tuple[float, float] | None = None  # y range, else from the data
    band: tuple[str, str] | None = None  # series drawn as a shaded band under the line


_PERCENT = (-2.5, 102.5)  # ticks 0..100; the margin keeps 0 % and 100 % lines off the frame


def _panels() -> list[_Panel]:
    return [
        _Panel("score_mean100", "Score (mean of last 100 episodes)"),
        _Panel("loss", "Loss"),  # the scale is appended once the data is known
        _Panel("agree", "Agree% (replayed action = greedy action)", fixed=_PERCENT),
        _Panel("q_mean", "Q values: mean (line), min..max (band)", band=("q_min", "q_max")),
        _Panel("grad_norm", "Gradient norm (before clipping)"),
        _Panel("clip_delta", "ClipΔ (clipped / unclipped gradient norm)", fixed=(0.0, 1.05)),
        *(_Panel(f"greedy:{k}", f"Greedy action: {k} (% of sample)", fixed=_PERCENT)
          for k in BUTTON_KEYS),
    ]


@dataclass
class _Layout:
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


def _layout(width: int, n_panels: int, legend_labels: list[str], font: _Font) -> _Layout:
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
            return _Layout(width, grid_bottom + margin, cols, margin, title_h, pw, ph,
                           (x, y + round(40 * s), box_w, box_h), lcols, s)
    # else a band under the grid, in as many columns as the width allows
    box_w = width - 2 * margin - round(40 * s)
    lcols = max(1, min(n_lines, box_w // max(entry_w, 1)))
    box_h = math.ceil(n_lines / lcols) * line_h
    return _Layout(width, grid_bottom + box_h + round(30 * s) + margin, cols, margin, title_h,
                   pw, ph, (margin + round(30 * s), grid_bottom + round(20 * s), box_w, box_h),
                   lcols, s)


def _legend_font(s: float) -> tuple[int, int]:
    """Legend text size and line spacing, in pixels."""
    px = max(11, round(15 * s))
    return px, round(1.75 * px)


def _points(xs: np.ndarray, ys: np.ndarray, w: int, h: int) -> np.ndarray:
    """Fractions of the plot area -> fixed-point pixel coordinates (clamped: cv2 takes int32)."""
    px = np.clip(xs * (w - 1), -1e4, 1e4)
    py = np.clip((1.0 - ys) * (h - 1), -1e4, 1e4)
    return np.round(np.stack([px, py], axis=1) * _ONE).astype(np.int32)


def _segments(x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Index runs of consecutive finite points; a gap or a step going backwards splits them."""
    idx = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if idx.size == 0:
        return []
    cut = (np.diff(idx) != 1) | (np.diff(x[idx]) < 0)
    return np.split(idx, np.flatnonzero(cut) + 1)


def _dashed_vline(img: np.ndarray, x: int, y0: int, y1: int, color: tuple[int, int, int],
                  phase: int, dash: int, gap: int) -> None:
    # cv2 has no dashed lines: draw the dashes one by one. LINE_8, not LINE_AA: on a vertical
    # line at a whole pixel AA only smears it into faint neighbouring columns
    y = y0 + phase % (dash + gap)
    while y < y1:
        cv2.line(img, (x, y), (x, min(y + dash - 1, y1)), color, 1, cv2.LINE_8)
        y += dash + gap


def _y_axis(panel: _Panel, runs: list[_Run], target: int) -> tuple[_Axis | None, str]:
    """The panel's y axis (None: no run has a value) and its title."""
    keys = [panel.key, *(panel.band or ())]
    values = np.concatenate([r.series[k] for r in runs for k in keys])
    values = values[np.isfinite(values)]
    title = panel.title
    if panel.key == "loss":
        log = use_log_scale(values)
        title += " (log scale)" if log else " (linear scale)"
        if log:
            return _log_axis(float(values.min()), float(values.max()), target), title
    if panel.fixed is not None:
        return _linear_axis(*panel.fixed, target, loose=False), title
    if values.size == 0:
        return None, title
    return _linear_axis(float(values.min()), float(values.max()), target, loose=True), title


def _draw_panel(img: np.ndarray, font: _Font, lay: _Layout, i: int, panel: _Panel,
                runs: list[_Run], x_axis: tuple[float, float]) -> None:
    s = lay.s
    cx, cy = lay.cell(i)
    label_px, title_px = max(10, round(13 * s)), max(11, round(17 * s))
    left = cx + round(62 * s)
    top = cy + title_px + round(16 * s)
    right = cx + lay.pw - round(18 * s)
    bottom = cy + lay.ph - 2 * label_px - round(22 * s)
    w, h = right - left, bottom - top
    y_axis, title = _y_axis(panel, runs, max(3, h // 45))
    font.draw(img, font.fit(title, title_px, lay.pw - round(20 * s)), left, cy + title_px + 2,
              title_px)

    # x ticks: tight range (0 .. the furthest step), so the curves use the whole width
    x0, x1 = x_axis
    xa = _linear_axis(x0, x1, max(2, w // 95), loose=False)
    xa.lo, xa.hi = x0, x1
    for t, text in zip(xa.ticks, xa.labels):
        x = left + round((t - x0) / (x1 - x0) * (w - 1))
        cv2.line(img, (x, top), (x, bottom), _GRID, 1)
        cv2.line(img, (x, bottom), (x, bottom + round(5 * s)), _AXIS, 1)
        font.draw(img, text, x, bottom + round(8 * s) + label_px, label_px, align="center")
    font.draw(img, "agent steps", (left + right) / 2, bottom + round(14 * s) + 2 * label_px,
              label_px, _MUTED, align="center")

    if y_axis is not None:
        for t, text in zip(y_axis.ticks, y_axis.labels):
            y = bottom - round((t - y_axis.lo) / (y_axis.hi - y_axis.lo) * (h - 1))
            cv2.line(img, (left, y), (right, y), _GRID, 1)
            cv2.line(img, (left - round(5 * s), y), (left, y), _AXIS, 1)
            font.draw(img, text, left - round(8 * s), y + round(0.35 * label_px), label_px,
                      align="right")

    plot = img[top:bottom, left:right]  # a view: cv2 clips every curve to the plot area
    thick = max(1, round(2 * s))
    if y_axis is not None and panel.band is not None:
        for run in runs:
            _draw_band(plot, run, panel.band, xa, y_axis)
    # events under the curves; on an empty panel too, where they still tell a story
    for k, run in enumerate(runs):
        for step, _ in run.events:
            x = round(xa.frac(np.array([step]))[0] * (w - 1))
            # runs' dashes start at different offsets, so events at one step interleave
            _dashed_vline(plot, x, 0, h - 1, run.color, phase=3 * k,
                          dash=max(3, round(6 * s)), gap=max(2, round(4 * s)))
    if y_axis is not None:
        for run in runs:
            xs, ys = xa.frac(run.steps), y_axis.frac(run.series[panel.key])
            for seg in _segments(xs, ys):
                pts = _points(xs[seg], ys[seg], w, h)
                if len(seg) == 1:  # a lone value between gaps would be invisible as a line
                    cv2.circle(plot, tuple(pts[0]), thick * _ONE, run.color, -1, cv2.LINE_AA,
                               _SHIFT)
                else:
                    cv2.polylines(plot, [pts], False, run.color, thick, cv2.LINE_AA, _SHIFT)
    else:
        font.draw(img, "no data yet", (left + right) / 2, (top + bottom) / 2, label_px + 2,
                  _MUTED, align="center")
    cv2.rectangle(img, (left, top), (right, bottom), _AXIS, 1)


def _draw_band(plot: np.ndarray, run: _Run, band: tuple[str, str], xa: _Axis,
               ya: _Axis) -> None:
    h, w = plot.shape[:2]
    xs = xa.frac(run.steps)
    lo, hi = ya.frac(run.series[band[0]]), ya.frac(run.series[band[1]])
    polys = []
    for seg in _segments(xs, lo + hi):  # NaN in either bound breaks the band
        upper, lower = _points(xs[seg], hi[seg], w, h), _points(xs[seg], lo[seg], w, h)
        polys.append(np.concatenate([upper, lower[::-1]]))
    if polys:
        # fillPoly has no alpha: fill a copy, then blend it back
        overlay = plot.copy()
        cv2.fillPoly(overlay, polys, run.color, cv2.LINE_AA, _SHIFT)
        for poly in polys:  # a one-row band has no area: its edge keeps it visible
            cv2.polylines(overlay, [poly], True, run.color, 1, cv2.LINE_AA, _SHIFT)
        cv2.addWeighted(overlay, _BAND_ALPHA, plot, 1 - _BAND_ALPHA, 0, dst=plot)


def _draw_legend(img: np.ndarray, font: _Font, lay: _Layout, runs: list[_Run],
                 labels: list[str]) -> None:
    s = lay.s
    x0, y0, box_w, _ = lay.legend
    px, line_h = _legend_font(s)
    per_col = math.ceil(len(labels) / lay.legend_cols)
    col_w = box_w // lay.legend_cols
    swatch = round(30 * s)
    for i, text in enumerate(labels):
        x = x0 + (i // per_col) * col_w
        y = y0 + (i % per_col) * line_h + px
        mid = y - round(0.35 * px)
        if i < len(runs):
            cv2.line(img, (x, mid), (x + swatch, mid), runs[i].color, max(2, round(3 * s)),
                     cv2.LINE_AA)
        else:  # the events key: a short dashed vertical line
            _dashed_vline(img, x + swatch // 2, y - px, y + px // 4, _AXIS, phase=0,
                          dash=max(3, px // 3), gap=max(2, px // 5))
        font.draw(img, font.fit(text, px, col_w - swatch - round(20 * s)),
                  x + swatch + round(10 * s), y, px, _MUTED if i >= len(runs) else _TEXT)


# ------------------------------------------------------------------------------ entry points
def default_output(run_dirs: list[Path]) -> Path:
    """RUN_DIR/curves.png for one run; curves.png in the working directory for several."""
    return Path(run_dirs[0]) / "curves.png" if len(run_dirs) == 1 else Path("curves.png")


def plot_runs(run_dirs: list[Path], out: Path, width: int = 1600,
              title: str | None = None) -> Path:
    """Draw the learning curves of `run_dirs` overlaid into the PNG `out` (replaced atomically);
    returns `out`. PlotError, and nothing written, on a bad output path, run or metrics file."""
    out = Path(out)
    # before the (possibly long) reading, so a typo fails at once
    check_output(out, ".png", "plot", PlotError)
    if isinstance(width, bool) or not isinstance(width, int) or width < MIN_WIDTH:
        raise PlotError(f"width must be a whole number of pixels >= {MIN_WIDTH}, got {width!r}")
    if not run_dirs:
        raise PlotError("no run directories given (expected directories made by "
                        "`atari-agent train`)")
    runs = _load_runs([Path(d) for d in run_dirs])
    if not any(r.has_data for r in runs):
        files = ", ".join(str(r.path / "metrics.jsonl") for r in runs)
        raise PlotError(f"nothing to plot yet: {files} "
                        f"{'has' if len(runs) == 1 else 'have'} no metric values (rows appear "
                        "as training reports; learner metrics after the first health check)")
    img = _render(runs, width, title)
    ok, png = cv2.imencode(".png", img)
    if not ok:  # cv2 reports failure by return value, not by raising
        raise PlotError(f"{out}: OpenCV could not encode the image as PNG")
    _write_atomic(out, png.tobytes())
    return out


def _render(runs: list[_Run], width: int, title: str | None) -> np.ndarray:
    font = _Font()
    labels = [_legend_label(r) for r in runs]
    labels.append("dashed vertical line: watchdog event (divergence, rollback, halt), "
                  "in the run's colour")
    panels = _panels()
    lay = _layout(width, len(panels), labels, font)
    img = np.full((lay.height, lay.width, 3), 255, np.uint8)
    if title is None:
        games = sorted({r.game for r in runs if r.game})
        title = "Learning curves" + (f" — {', '.join(games)}" if games else "")
    font.draw(img, font.fit(title, max(14, round(26 * lay.s)), width - 2 * lay.margin),
              lay.margin + round(10 * lay.s), lay.margin + round(30 * lay.s),
              max(14, round(26 * lay.s)))
    steps = [float(r.steps.max()) for r in runs if r.steps.size]
    steps += [s for r in runs for s, _ in r.events]
    x_axis = (0.0, max([*steps, 1.0]))
    for i, panel in enumerate(panels):
        _draw_panel(img, font, lay, i, panel, runs, x_axis)
    _draw_legend(img, font, lay, runs, labels)
    return img


def _write_atomic(out: Path, data: bytes) -> None:
    """A reader (an image viewer refreshing curves.png) never sees half a file, and a failure
    leaves the old one in place."""
    files.atomic_write(out, lambda f: f.write(data), error=PlotError)
