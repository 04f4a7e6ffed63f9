"""Learning curves of training runs as one PNG: which metrics go in which panel.

Reads RUN_DIR/metrics.jsonl (the format is agent/report.py's) of one or more runs and overlays
them, one colour per run, in a grid of panels that share the x axis (agent steps):

1. Score (score_mean100)            2. Loss (log scale when all values are > 0 and span more
3. Agree%, 0-100                       than 2 decades, else linear; the title says which)
4. Q values: q_mean line, q_min..q_max alpha-blended band
5. Gradient norm (grad_norm)        6. ClipΔ (clip_delta), 0-1.05
7-10. Greedy action share of each button (noop, ZAP, FIRE, FIRE+ZAP), 0-100 %: one panel per
      button rather than one panel with four line styles, because styles x colours stop being
      legible beyond two runs.

Watchdog events (divergence / rollback / halt) are thin dashed vertical lines in the run's
colour on every panel. Nulls and "nan" leave gaps; a step count going backwards (a resumed run)
starts a new line segment too, so a resume never draws a line back in time. The drawing itself
(axes, text, grid, legend, PNG) is agent/chart.py's.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent import chart, files
from agent.chart import MIN_WIDTH
from agent.diagnostics import BUTTON_KEYS
from agent.outputs import check_output

WATCHDOG_EVENTS = ("divergence", "rollback", "halt")
"""Events drawn as dashed vertical lines; others (checkpoint, eval, ...) would only clutter."""

X_LABEL = "agent steps"
EVENTS_KEY = ("dashed vertical line: watchdog event (divergence, rollback, halt), in the run's "
              "colour")


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
    color: chart.BGR
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
        marks = [(s, str(e["event"])) for e in events if e.get("event") in WATCHDOG_EVENTS
                 and (s := _number(e.get("steps"))) is not None]
        game, state = _run_info(Path(run_dir))
        runs.append(_Run(name=name, path=Path(run_dir), color=chart.palette(i),
                         steps=np.array([float(row["steps"]) for row in rows]),
                         series=_series(rows), events=marks, game=game, state=state))
    return runs


def _legend_label(run: _Run) -> str:
    details = [run.game] if run.game else []
    if run.has_data:
        details.append(f"{chart.format_number(run.steps.max())} steps")
    if run.state:
        details.append(run.state)
    if run.events:
        n = len(run.events)
        details.append(f"{n} watchdog event{'s' if n > 1 else ''}")
    label = run.name + (f": {', '.join(details)}" if details else "")
    return label if run.has_data else f"{label} (no data yet)"


# ------------------------------------------------------------------------------ panels
@dataclass(frozen=True)
class _Panel:
    """Which series one panel shows."""

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


def _chart_panel(panel: _Panel, runs: list[_Run]) -> chart.Panel:
    """The panel's lines, bands and event marks for every run; loss goes log when it spans
    more than 2 decades, and its title says which scale it is on."""
    out = chart.Panel(panel.title, fixed=panel.fixed)
    for k, run in enumerate(runs):
        out.lines.append(chart.Line(run.color, run.steps, run.series[panel.key]))
        if panel.band is not None:
            lo, hi = panel.band
            out.bands.append(chart.Band(run.color, run.steps, run.series[lo], run.series[hi]))
        # runs' dashes start at different offsets, so events at one step interleave
        out.marks += [chart.Mark(step, run.color, phase=3 * k) for step, _ in run.events]
    if panel.key == "loss":
        out.log = chart.use_log_scale(out.values())
        out.title += " (log scale)" if out.log else " (linear scale)"
    return out


# ------------------------------------------------------------------------------ entry points
def default_output(run_dirs: list[Path]) -> Path:
    """RUN_DIR/curves.png for one run; curves.png in the working directory for several."""
    return Path(run_dirs[0]) / "curves.png" if len(run_dirs) == 1 else Path("curves.png")


def plot_runs(run_dirs: list[Path], out: Path, width: int = 1600,
              title: str | None = None) -> Path:
    """Draw the learning curves of `run_dirs` overlaid into the PNG `out` (replaced atomically);
    returns `out`. PlotError, and nothing written, on a bad run, output path or metrics file."""
    out = Path(out)
    if isinstance(width, bool) or not isinstance(width, int) or width < MIN_WIDTH:
        raise PlotError(f"width must be a whole number of pixels >= {MIN_WIDTH}, got {width!r}")
    if not run_dirs:
        raise PlotError("no run directories given (expected directories made by "
                        "`atari-agent train`)")
    # the runs first: the default output lies inside a run, so a mistyped run would otherwise
    # be reported as a missing output directory
    for run_dir in run_dirs:
        _metrics_path(Path(run_dir))
    # then the output, before the (possibly long) reading, so a typo fails at once
    check_output(out, ".png", "plot", PlotError)
    runs = _load_runs([Path(d) for d in run_dirs])
    if not any(r.has_data for r in runs):
        paths = ", ".join(str(r.path / "metrics.jsonl") for r in runs)
        raise PlotError(f"nothing to plot yet: {paths} "
                        f"{'has' if len(runs) == 1 else 'have'} no metric values (rows appear "
                        "as training reports; learner metrics after the first health check)")
    try:
        png = chart.encode_png(_render(runs, width, title))
    except ValueError as exc:
        raise PlotError(f"{out}: {exc}") from None
    # a reader (an image viewer refreshing curves.png) never sees half a file, and a failure
    # leaves the old one in place
    files.atomic_write(out, lambda f: f.write(png), error=PlotError)
    return out


def _render(runs: list[_Run], width: int, title: str | None) -> np.ndarray:
    legend = [chart.LegendEntry(_legend_label(r), r.color) for r in runs]
    legend.append(chart.LegendEntry(EVENTS_KEY, None))
    if title is None:
        games = sorted({r.game for r in runs if r.game})
        title = "Learning curves" + (f" — {', '.join(games)}" if games else "")
    steps = [float(r.steps.max()) for r in runs if r.steps.size]
    steps += [s for r in runs for s, _ in r.events]
    x_range = (0.0, max([*steps, 1.0]))
    panels = [_chart_panel(p, runs) for p in _panels()]
    return chart.render(width, title, panels, legend, x_range, X_LABEL)
