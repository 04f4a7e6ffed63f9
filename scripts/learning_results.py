"""The learning benchmark's results (scripts/bench_learning.py): their chart, their table, and
several benchmarks merged into one (--merge). Kept apart from the runs that make them."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchio import describe_load, describe_machine, table

SIDES = ("ours", "ours-ray", "sb3")
RESULTS = "results.json"
CURVES = "curves.png"
PNG_WIDTH = 1100  # under chart's 1200: two columns, one row of panels per game
MERGED = ("games", "seeds", "sides")
"""Settings that --resume may extend (their union is kept); every other one must match."""


class BenchError(ValueError):
    """Bad input or an --out that cannot be used; the message says which value and why."""


# ------------------------------------------------------------------------------ the chart
def _dashed(x0: float, x1: float, y: float, n: int = 24):
    """A horizontal dashed line as a chart.Line's x, y (NaN between the dashes)."""
    import numpy as np

    xs, ys = [], []
    for i in range(n):
        a = x0 + (x1 - x0) * i / n
        xs += [a, a + (x1 - x0) * 0.5 / n, math.nan]
        ys += [y, y, math.nan]
    return np.array(xs), np.array(ys)


def series_name(p: dict) -> str:
    """A point's line: its side, and ours' action set when not minimal (+ "shared" outputs)."""
    name = p["side"]
    if p.get("action_set", "minimal") != "minimal":
        name += f" {p['action_set']}"
    return name + (" shared" if p.get("shared_outputs") else "")


def _series_order(p: dict) -> tuple:
    return SIDES.index(p["side"]), series_name(p), p["seed"]


def render_png(res: dict, width: int = PNG_WIDTH) -> bytes:
    """One row per game: score vs agent steps | score vs training wall-clock minutes."""
    import numpy as np

    from agent import chart

    s = res["settings"]
    games = [g for g in s["games"] if any(p["game"] == g for p in res["points"])
             or any(r["game"] == g for r in res["random"])] or s["games"]
    first = {}
    for p in sorted(res["points"], key=_series_order):
        first.setdefault((series_name(p), p["seed"]), p)
    series = list(first)
    colors = {k: chart.palette(i) for i, k in enumerate(series)}
    grey = chart.MUTED
    panels: list[tuple[chart.Panel, tuple[float, float], str]] = []
    for game in games:
        points = [p for p in res["points"] if p["game"] == game]
        wall_max = max([p["wall_s"] / 60 for p in points] + [1e-3])
        by_steps = chart.Panel(f"{game}: score vs agent steps")
        by_wall = chart.Panel(f"{game}: score vs training wall-clock")
        for key in series:
            pts = sorted((p for p in points if (series_name(p), p["seed"]) == key),
                         key=lambda p: p["steps"])
            if not pts:
                continue
            y = np.array([p["mean"] for p in pts], float)
            by_steps.lines.append(chart.Line(colors[key], np.array([p["steps"] for p in pts],
                                                                   float), y))
            by_wall.lines.append(chart.Line(colors[key], np.array([p["wall_s"] / 60
                                                                   for p in pts]), y))
        for r in res["random"]:
            if r["game"] == game:
                by_steps.lines.append(chart.Line(grey, *_dashed(0, s["steps"], r["mean"])))
                by_wall.lines.append(chart.Line(grey, *_dashed(0, wall_max, r["mean"])))
        panels += [(by_steps, (0.0, float(s["steps"])), "agent steps"),
                   (by_wall, (0.0, wall_max), "training wall-clock (minutes)")]
    legend = [chart.LegendEntry(f"{name}, seed {seed}", colors[(name, seed)])
              for name, seed in series]
    legend.append(chart.LegendEntry("random policy (dashed)", grey))
    who = "ours vs SB3 DQN" if "sb3" in s["sides"] else "our DQN"
    title = f"{who}: mean score of {s['eval_episodes']} evaluation episodes a point"
    # chart.render with one x axis per panel (steps, minutes)
    font = chart.Font()
    lay = chart.layout(width, len(panels), [e.text for e in legend], font)
    img = np.full((lay.height, lay.width, 3), 255, np.uint8)
    title_px = max(14, round(26 * lay.s))
    font.draw(img, font.fit(title, title_px, width - 2 * lay.margin),
              lay.margin + round(10 * lay.s), lay.margin + round(30 * lay.s), title_px)
    for i, (panel, x_range, x_label) in enumerate(panels):
        chart.draw_panel(img, font, lay, i, panel, x_range, x_label)
    chart.draw_legend(img, font, lay, legend)
    return chart.encode_png(img)


def report(res: dict, stopped: bool, out: Path) -> str:
    m, s = res["machine"], res["settings"]
    lines = [
        f"Machine: {describe_machine(m)}; Python {m['python']}; {describe_load(m)}.",
        f"Games {', '.join(s['games'])} ({s['action_set']} actions"
        f"{', shared outputs' if s.get('shared_outputs') else ''}; the orders of ours and "
        f"gymnasium's checked equal), seeds {', '.join(map(str, s['seeds']))}, sides "
        f"{', '.join(s['sides'])}: {s['steps']:,} agent steps a run, learning from "
        f"{s['learning_starts']:,}; replay {s['replay_capacity']:,}, batch {s['batch_size']}, "
        f"an update every {s['train_freq']} steps, target sync every "
        f"{s['target_update_steps']:,} steps, epsilon {s['eps_start']:g} -> {s['eps_end']:g} "
        f"over {s['eps_decay_steps']:,} steps; torch threads "
        f"{s['torch_threads'] or 'torch default'}, device {s['device']}.",
        f"Points every {s['eval_every']:,} steps: mean score of {s['eval_episodes']} episodes "
        f"({s['eval_protocol']}, epsilon {s['eval_epsilon']}, seed {s['eval_seed']}); wall: "
        f"training only (setup, saves and evaluation excluded).",
    ]
    for r in res["runs"].values():
        if r.get("library"):
            lines.append(f"- {series_name(r)}/{r['game']}/seed {r['seed']}: {r['library']}, torch "
                         f"{r['torch_version']}, {r['precision']}, {r['torch_threads']} torch "
                         f"threads, device {r['device']}"
                         + (f", {r['ray_actors']} Ray actors" if r.get("ray_actors") else "")
                         + f"; {r.get('state', 'running')}"
                         + (f" ({r['error']})" if r.get("error") else ""))
    rows = [[series_name(p), p["game"], p["seed"], f"{p['steps']:,}",
             f"{p['wall_s'] / 60:.1f}", f"{p['mean']:.1f} ± {p['std']:.1f}"]
            for p in sorted(res["points"], key=lambda p: (s["games"].index(p["game"])
                                                          if p["game"] in s["games"] else 99,
                                                          *_series_order(p), p["steps"]))]
    rows += [[series_name({"side": "random", "action_set": r.get("action_set")}), r["game"], "-",
              "-", "-", f"{r['mean']:.1f} ± {r['std']:.1f}"] for r in res["random"]]
    lines += ["", *table(("side", "game", "seed", "steps", "wall min", "mean ± std"), rows), ""]
    if stopped:
        lines.append(f"Stopped after --stop-after-points; continue with --resume --out {out}.")
    lines.append(f"Results: {out / RESULTS}, chart: {out / CURVES}.")
    return "\n".join(lines)


VARIANTS = ("action_set", "shared_outputs")
"""Settings in which --merge's benchmarks may differ, besides MERGED: each point names its own."""


def merge(dirs: list[str]) -> dict:
    """One results object of several benchmarks' (--merge): their points, randoms and runs,
    settings checked equal but for MERGED and VARIANTS (so their curves compare)."""
    results = []
    for d in dirs:
        path = Path(d) / RESULTS
        try:
            results.append(json.loads(path.read_text()))
            results[-1]["settings"]["steps"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"--merge: {path} is not a benchmark's results ({exc})") from None
    base = results[0]["settings"]
    for d, r in zip(dirs[1:], results[1:]):
        other = r["settings"]
        for key in sorted((set(base) | set(other)) - {*MERGED, *VARIANTS}):
            if base.get(key) != other.get(key):
                raise BenchError(f"--merge: {d} ran with {key} = {json.dumps(other.get(key))} "
                                 f"but {dirs[0]} with {json.dumps(base.get(key))}: only "
                                 f"benchmarks that differ in {', '.join(MERGED + VARIANTS)} "
                                 f"merge")
    settings = {k: v for k, v in base.items() if k not in VARIANTS}
    for key in MERGED:
        settings[key] = list(dict.fromkeys(v for r in results for v in r["settings"][key]))
    settings["action_set"] = ", ".join(dict.fromkeys(r["settings"]["action_set"]
                                                     for r in results))
    res = dict(settings=settings, points=[], random=[], runs={}, merged_from=list(dirs),
               machine=results[0].get("machine", {}), quick=results[0].get("quick"))
    for r in results:
        variant = {k: r["settings"].get(k, False) for k in VARIANTS}
        points = [{**variant, **p} for p in r["points"]]
        res["points"] += points
        res["random"] += [x for x in r["random"]  # the random policy of each action set
                          if not any((y["game"], y["action_set"]) == (x["game"], x["action_set"])
                                     for y in res["random"])]
        for key, run in r["runs"].items():
            name = series_name({"side": run["side"], **variant})
            res["runs"][key.replace(run["side"], name, 1)] = {**run, **variant}
    return res
