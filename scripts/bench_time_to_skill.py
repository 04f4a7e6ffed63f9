"""Time to skill: minutes from `atari-agent train` to a greedy agent that scores a target under
the evaluation protocol, the clock running from the command's start (issue 16: Pong, mean >= 0
and >= 18 on a 2-core machine).

Run from the repository root (the package installed):

    python scripts/bench_time_to_skill.py -- --preset fast-cpu --action-set minimal  # 0, 18
    python scripts/bench_time_to_skill.py --game breakout --targets 10,30 -- --envs 2
    python scripts/bench_time_to_skill.py --quick                  # smoke: a minute or two
    python scripts/bench_time_to_skill.py --resume --max-minutes 180  # continue a cut one
    python scripts/bench_time_to_skill.py --rescore --confirm-tries 8  # score more crossings

What runs: `atari-agent train --game GAME --eval-every E --eval-episodes K --checkpoint-every E
--keep-last 100000 --total-steps MAX --runs-dir OUT --name run`, then whatever follows `--` (a
preset, settings), the clock started just before the process. The run's own periodic
evaluations are the stopwatch: each plays K episodes under the protocol (sticky actions 0.25,
game over ends an episode, raw score, up to 30 no-op frames, epsilon 0.001; seeds 10,000 +
step), and their time counts, as it does for a user. The first evaluation at or above a target
crosses it. The run is stopped as Ctrl-C stops it (SIGINT to its pid: it saves and exits) once
the highest target is crossed, or at --max-minutes; or it ends at --max-steps.

Confirmation: afterwards, with the machine to itself, the checkpoint of each crossing (saved at
that step, just before the evaluation) is scored over --confirm-episodes episodes under the
protocol at evaluation seed 0, other games than the run's: "confirmed" when that mean is at or
above the target too. An evaluation of 10 episodes can cross by luck, so when the first
crossing's checkpoint falls short, the next evaluations at or above the target are scored in
turn, up to --confirm-tries in all: the time to skill is the first confirmed one's minutes. The
table shows the first crossing, its score, and where (if anywhere) the target was confirmed.
--rescore scores the crossings of a finished or cut benchmark again with today's
--confirm-tries, without training (the tries already scored are kept).

Resume. A benchmark cut by --max-minutes or stopped (Ctrl-C, SIGTERM) continues with the same
--out and --resume (and a larger --max-minutes after a --max-minutes stop): the run goes on from
the checkpoint it saved when it was stopped (`atari-agent train --resume`; add --save-replay
after `--` in the first command to keep its replay across the cut, else the resumed run refills
learning_starts steps first), with the settings results.json records. The clock counts the
minutes each command ran, not the pause between them: a resumed benchmark's minutes are the
sum, the time a cut costs (a restart, a refill) included.

Output in --out (default bench-time-to-skill/): run/ (the training run: `atari-agent plot`,
`play`, `evaluate` read it), run.log (its terminal output), results.json (machine, command,
every evaluation, the crossings) and curves.png (score vs minutes since the command's start and
vs agent steps, targets dashed); --json and --png write copies. A table at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchio  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIRM_SEED = 0
EVAL_EPSILON = 0.001  # the protocol's
STOP_GRACE_S = 300.0  # a stopped run saves its checkpoint (and its replay when asked) first
QUICK = dict(game="pong", targets=[-21.0], eval_every=1_000, eval_episodes=1,
             confirm_episodes=2, max_steps=3_000,
             train_args=["--learning-starts", "500", "--capacity", "5000", "--threads", "1"])


class BenchError(Exception):
    """A bad argument or output path: said in one line, before anything runs."""


def train_command(args, run_dir: Path) -> list[str]:
    if args.prior is not None:  # the run keeps its config.toml: only the step cap is passed
        return [sys.executable, "-m", "agent", "train", "--resume", str(run_dir),
                "--total-steps", str(args.max_steps)]
    return [sys.executable, "-m", "agent", "train", "--game", args.game,
            "--eval-every", str(args.eval_every), "--eval-episodes", str(args.eval_episodes),
            "--checkpoint-every", str(args.eval_every), "--keep-last", "100000",
            "--total-steps", str(args.max_steps), "--runs-dir", str(run_dir.parent),
            "--name", run_dir.name, *args.train_args]


def read_evals(metrics: Path, t0: float, offset: int, evals: list[dict],
               spent: float = 0.0) -> int:
    """Append the evaluation rows written since byte `offset` (whole lines only), their minutes
    counted from `t0` plus `spent` (the earlier commands' minutes); the new offset."""
    try:
        with open(metrics, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        row = json.loads(line)
        if row.get("event") == "eval":
            evals.append(dict(minutes=spent + (row["time"] - t0) / 60, steps=int(row["steps"]),
                              mean=float(row["mean"]), std=float(row["std"]),
                              episodes=int(row["episodes"])))
    return offset + end


def crossings(evals: list[dict], targets: list[float]) -> list[dict]:
    """The first evaluation at or above each target (None: not crossed)."""
    out = []
    for target in targets:
        first = next((e for e in evals if e["mean"] >= target), None)
        out.append(dict(target=target, **({"minutes": None, "steps": None, "in_run_mean": None}
                                           if first is None else
                                           {"minutes": first["minutes"], "steps": first["steps"],
                                            "in_run_mean": first["mean"]})))
    return out


def train(args, out: Path, log, spent: float) -> tuple[list[dict], str, list[str], int]:
    """Run the training command until the highest target is crossed, the clock (`spent`
    minutes before this command plus its own) reaches --max-minutes, the run ends or this
    script is stopped: (its evaluations, why it stopped, the command, the exit status due)."""
    run_dir = out / "run"
    cmd = train_command(args, run_dir)
    log("training: " + " ".join(cmd[2:]))
    evals: list[dict] = []
    why, code = "finished", 0
    top = max(args.targets)
    metrics = run_dir / "metrics.jsonl"
    # a resumed run appends: the rows already there are the earlier commands'
    offset = metrics.stat().st_size if args.prior is not None and metrics.exists() else 0
    with open(out / "run.log", "a" if args.prior is not None else "w") as run_log:
        t0 = time.time()  # the command's start: metrics.jsonl's "time" is time.time() too
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=run_log, stderr=subprocess.STDOUT)
        try:
            while True:
                done = proc.poll() is not None
                n = len(evals)
                offset = read_evals(metrics, t0, offset, evals, spent)
                for e in evals[n:]:
                    log(f"step {e['steps']:,}, {e['minutes']:.1f} min: {e['mean']:.1f} ± "
                        f"{e['std']:.1f} ({e['episodes']} episodes)")
                if done:
                    break
                if evals and evals[-1]["mean"] >= top:
                    why = "target"
                    break
                if spent + (time.time() - t0) / 60 >= args.max_minutes:
                    why = "max_minutes"
                    break
                time.sleep(1.0)
        except KeyboardInterrupt:  # Ctrl-C: the run gets SIGINT too, and saves
            why, code = "interrupted", 130
        except SystemExit as e:  # SIGTERM (benchio.start)
            why, code = "interrupted", e.code if isinstance(e.code, int) else 1
        finally:
            benchio.stop_runs({"the run": proc}, log, STOP_GRACE_S)
            read_evals(metrics, t0, offset, evals, spent)  # any logged since the last look
    if why == "finished" and proc.returncode != 0:
        raise SystemExit(f"the training run failed with exit status {proc.returncode}: see "
                         f"{out / 'run.log'}")
    return evals, why, cmd, code


def _tries(c: dict) -> list[dict]:
    """The checkpoints scored for crossing `c` so far (a results.json from before --confirm-tries
    recorded one score, the first crossing's, in the crossing itself)."""
    if "tries" in c:
        return c["tries"]
    if "confirmed_mean" not in c:
        return []
    return [dict(steps=c["steps"], minutes=c["minutes"], in_run_mean=c["in_run_mean"],
                 checkpoint=c["checkpoint"], mean=c["confirmed_mean"], std=c["confirmed_std"],
                 episodes=c["confirmed_episodes"])]


def confirm(run_dir: Path, crossed: list[dict], evals: list[dict], episodes: int, tries: int,
            log) -> None:
    """Score the checkpoints of the evaluations at or above each target over `episodes`
    protocol episodes (seed 0), in step order, until one scores the target too or `tries` are
    scored. Each checkpoint is scored once, for every target, in this and earlier commands."""
    from agent.evaluate import checkpoint_targets, evaluate

    scored = {t["steps"]: t for c in crossed for t in _tries(c)}
    for c in crossed:
        if c["steps"] is None:
            continue
        c["tries"] = []
        for e in [e for e in evals if e["mean"] >= c["target"]][:tries]:
            if e["steps"] not in scored:
                path = run_dir / "checkpoints" / f"ckpt-{e['steps']:012d}.pt"
                (r,) = evaluate(checkpoint_targets([path], {}), episodes, CONFIRM_SEED,
                                EVAL_EPSILON, 0)
                scored[e["steps"]] = dict(steps=e["steps"], minutes=e["minutes"],
                                          in_run_mean=e["mean"], checkpoint=str(path),
                                          mean=r["mean"], std=r["std"], episodes=r["episodes"])
                log(f"{path.name}: {r['mean']:.1f} ± {r['std']:.1f} over {r['episodes']} "
                    f"episodes")
            c["tries"].append(scored[e["steps"]])
            if scored[e["steps"]]["mean"] >= c["target"]:
                break
        first, last = c["tries"][0], c["tries"][-1]
        # the first crossing's own score, as before --confirm-tries; then where it held
        c.update(checkpoint=first["checkpoint"], confirmed_mean=first["mean"],
                 confirmed_std=first["std"], confirmed_episodes=first["episodes"],
                 confirmed=last["mean"] >= c["target"])
        if c["confirmed"]:
            c.update(confirmed_minutes=last["minutes"], confirmed_steps=last["steps"])


def render_png(res: dict, width: int = 1100) -> bytes:
    """Score vs minutes since the command's start | score vs agent steps; targets dashed."""
    import numpy as np

    from agent import chart

    evals, s = res["evals"], res["settings"]
    x_min = max([e["minutes"] for e in evals] + [1e-3])
    x_steps = max([e["steps"] for e in evals] + [1])
    by_min = chart.Panel(f"{s['game']}: score vs minutes since `atari-agent train` started")
    by_steps = chart.Panel(f"{s['game']}: score vs agent steps")
    y = np.array([e["mean"] for e in evals], float)
    color = chart.palette(0)
    by_min.lines.append(chart.Line(color, np.array([e["minutes"] for e in evals], float), y))
    by_steps.lines.append(chart.Line(color, np.array([e["steps"] for e in evals], float), y))
    for target in s["targets"]:
        for panel, x1 in ((by_min, x_min), (by_steps, x_steps)):
            xs = np.repeat(np.linspace(0, x1, 25), 3).reshape(-1, 3)
            xs[:, 1] = xs[:, 0] + x1 / 48
            xs[:, 2] = math.nan
            ys = np.where(np.isnan(xs), math.nan, target)
            panel.lines.append(chart.Line(chart.MUTED, xs.ravel(), ys.ravel()))
    # the confirmations as dots: one value between NaNs draws as a dot
    tries = sorted({t["steps"]: t for c in res["crossings"] for t in c.get("tries", ())}.values(),
                   key=lambda t: t["steps"])
    dots = chart.palette(1)
    for panel, key in ((by_min, "minutes"), (by_steps, "steps")):
        xs = np.array([v for t in tries for v in (t[key], math.nan)], float)
        ys = np.array([v for t in tries for v in (t["mean"], math.nan)], float)
        panel.lines.append(chart.Line(dots, xs, ys))
    legend = [chart.LegendEntry(f"in-run evaluation ({s['eval_episodes']} episodes)", color),
              chart.LegendEntry("targets (dashed)", chart.MUTED)]
    if tries:
        legend.append(chart.LegendEntry(
            f"a crossing's checkpoint over {s['confirm_episodes']} episodes (dots)", dots))
    font = chart.Font()
    lay = chart.layout(width, 2, [e.text for e in legend], font)
    img = np.full((lay.height, lay.width, 3), 255, np.uint8)
    title = f"time to skill: {s['game']}, the clock from the command's start"
    title_px = max(14, round(26 * lay.s))
    font.draw(img, font.fit(title, title_px, width - 2 * lay.margin),
              lay.margin + round(10 * lay.s), lay.margin + round(30 * lay.s), title_px)
    chart.draw_panel(img, font, lay, 0, by_min, (0.0, x_min), "minutes")
    chart.draw_panel(img, font, lay, 1, by_steps, (0.0, float(x_steps)), "agent steps")
    chart.draw_legend(img, font, lay, legend)
    return chart.encode_png(img)


def report(res: dict) -> str:
    s, m = res["settings"], res["machine"]
    pieces = [f"{p['minutes']:.1f}" for p in res["pieces"]]
    cut = f" in {len(pieces)} commands ({' + '.join(pieces)} min)" if len(pieces) > 1 else ""
    lines = [f"Machine: {benchio.describe_machine(m)}; {benchio.describe_load(m)}.",
             f"Command: atari-agent {' '.join(res['command'][3:])}",
             f"Stopped: {res['stopped']} after {res['minutes']:.1f} min{cut}; evaluations of "
             f"{s['eval_episodes']} episodes every {s['eval_every']:,} steps, confirmations of "
             f"{s['confirm_episodes']} (protocol, seed {CONFIRM_SEED}).", ""]
    rows = []
    for c in res["crossings"]:
        if c["steps"] is None:
            rows.append((f"{c['target']:g}", "not reached", "-", "-", "-", "-"))
            continue
        if "confirmed" not in c:  # a stopped benchmark scores later
            held = "-"
        elif not c["confirmed"]:
            held = f"NO ({len(c['tries'])} scored)"
        elif c["confirmed_steps"] == c["steps"]:
            held = "yes"
        else:
            t = c["tries"][-1]
            held = (f"at {t['minutes']:.1f} min, {t['steps']:,} steps: "
                    f"{t['mean']:.1f} ± {t['std']:.1f}")
        rows.append((f"{c['target']:g}", f"{c['minutes']:.1f}", f"{c['steps']:,}",
                     f"{c['in_run_mean']:.1f}",
                     f"{c['confirmed_mean']:.1f} ± {c['confirmed_std']:.1f}"
                     if "confirmed" in c else "not yet", held))
    lines += benchio.table(("target", "minutes", "steps", "in-run mean",
                            f"{s['confirm_episodes']}-episode mean", "confirmed"), rows)
    return "\n".join(lines)


# What a resumed benchmark keeps from its first command (results.json's settings), with the
# first command's defaults.
KEPT = dict(game="pong", max_steps=10_000_000, eval_every=25_000, eval_episodes=10,
            confirm_episodes=30)


def parse_args(argv: list[str] | None):
    own, train_args = benchio.split_passthrough(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--game", help="the game (pong)")
    p.add_argument("--targets", help="mean scores to reach, comma-separated (0,18; quick "
                                      "-21); the run stops at the highest")
    p.add_argument("--max-minutes", type=float, default=180.0,
                   help="stop the run after this many minutes (180)")
    p.add_argument("--max-steps", type=int, help="the run's --total-steps (10,000,000)")
    p.add_argument("--eval-every", type=int,
                   help="agent steps between the run's evaluations (25,000)")
    p.add_argument("--eval-episodes", type=int, help="episodes an evaluation (10)")
    p.add_argument("--confirm-episodes", type=int,
                   help="episodes scoring each crossing's checkpoint afterwards (30)")
    p.add_argument("--confirm-tries", type=int,
                   help="checkpoints at or above a target scored at most, in step order, until "
                        "one confirms it (5)")
    p.add_argument("--out", default="bench-time-to-skill",
                   help="directory of the run and results (bench-time-to-skill/)")
    p.add_argument("--json", metavar="FILE", help="also write results.json here")
    p.add_argument("--png", metavar="FILE", help="also write curves.png here")
    p.add_argument("--quick", action="store_true",
                   help="smoke: Pong to -21 (any agent), 3,000 steps at most, an evaluation "
                        "every 1,000")
    p.add_argument("--resume", action="store_true",
                   help="continue the benchmark in --out that --max-minutes or a stop cut, "
                        "with its settings (the clock adds up the commands' minutes)")
    p.add_argument("--rescore", action="store_true",
                   help="score the crossings of the benchmark in --out again, without training "
                        "(after a change of --confirm-tries)")
    args = p.parse_args(own)
    args.train_args = train_args
    if args.resume and args.rescore:
        p.error("--resume and --rescore: choose one (--rescore trains nothing)")
    targets = args.targets
    if targets is not None:
        try:
            args.targets = [float(t) for t in targets.split(",")]
        except ValueError:
            p.error(f"--targets must be comma-separated numbers, got {targets!r}")
    args.prior = resumed(p, args) if args.resume or args.rescore else None
    if args.confirm_tries is None:
        args.confirm_tries = (args.prior or {}).get("settings", {}).get("confirm_tries", 5)
    if args.prior is None:
        if args.quick:
            for key, value in QUICK.items():
                if key in (*KEPT, "targets") and getattr(args, key) is not None:
                    continue  # a flag given with --quick wins
                setattr(args, key, value if key != "train_args" else [*value, *train_args])
        for key, value in KEPT.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        if args.targets is None:
            args.targets = [0.0, 18.0]
    for name in ("max_steps", "eval_every", "eval_episodes", "confirm_episodes",
                 "confirm_tries"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.max_minutes <= 0:
        p.error(f"--max-minutes must be positive, got {args.max_minutes:g}")
    if args.prior is None and (Path(args.out) / "run").exists():
        p.error(f"{Path(args.out) / 'run'} exists (an earlier benchmark): choose another --out, "
                f"remove it or continue it with --resume")
    if args.resume and args.prior["minutes"] >= args.max_minutes:
        p.error(f"--resume: the benchmark in {args.out} has run {args.prior['minutes']:.1f} "
                f"minutes already; pass a larger --max-minutes (now {args.max_minutes:g})")
    benchio.check_copy_paths(p, args.json, args.png)
    return args


def resumed(p: argparse.ArgumentParser, args) -> dict:
    """--resume, --rescore: results.json of the benchmark in --out (for --resume, a cut one),
    its settings set on `args` (a flag that contradicts them is refused: the run keeps its
    own)."""
    flag = "--resume" if args.resume else "--rescore"
    path = Path(args.out) / "results.json"
    try:
        prior = json.loads(path.read_text())
        settings = prior["settings"]
    except (OSError, ValueError, KeyError) as e:
        p.error(f"{flag}: no benchmark to {'continue' if args.resume else 'score'} in "
                f"{args.out} ({path}: {e})")
    if args.resume and prior["stopped"] not in ("max_minutes", "interrupted"):
        p.error(f"--resume: the benchmark in {args.out} is done (stopped: {prior['stopped']}); "
                f"start another with a new --out")
    if not (Path(args.out) / "run" / "checkpoints").is_dir():
        p.error(f"{flag}: {Path(args.out) / 'run' / 'checkpoints'} is missing")
    if args.train_args:
        p.error(f"{flag}: the run keeps the settings of its first command; pass nothing "
                f"after -- (got {' '.join(args.train_args)})")
    for key in (*KEPT, "targets"):
        given = getattr(args, key)
        if given is not None and given != settings[key]:
            p.error(f"{flag}: the benchmark in {args.out} ran with --{key.replace('_', '-')} "
                    f"{settings[key]}, this command asks for {given}")
        setattr(args, key, settings[key])
    args.train_args, args.quick = settings["train_args"], settings["quick"]
    return prior


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out, log, machine = benchio.start(args.out)  # SIGTERM then stops the run by its pid
    if args.rescore:
        res = args.prior
        crossed = carried(crossings(res["evals"], args.targets), res["crossings"])
        score(out, crossed, res["evals"], args, log)
        res["settings"]["confirm_tries"] = args.confirm_tries
        return publish(dict(res, crossings=crossed), out, args)
    prior = args.prior or dict(pieces=[], evals=[], minutes=0.0)
    t0 = time.time()
    new, why, cmd, code = train(args, out, log, prior["minutes"])
    piece = dict(started=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t0)),
                 minutes=(time.time() - t0) / 60, command=cmd[2:], stopped=why)
    # a resumed run goes on from the checkpoint saved at its stop: an evaluation it repeats
    # (none unless that save failed) replaces the earlier one
    evals = [e for e in prior["evals"] if not new or e["steps"] < new[0]["steps"]] + new
    pieces = [*prior["pieces"], piece]
    crossed = carried(crossings(evals, args.targets), prior.get("crossings", ()))
    if why != "interrupted":
        score(out, crossed, evals, args, log)
    machine["loadavg_end"] = benchio.loadavg()
    settings = dict(game=args.game, targets=args.targets, eval_every=args.eval_every,
                    eval_episodes=args.eval_episodes, confirm_episodes=args.confirm_episodes,
                    confirm_tries=args.confirm_tries, max_minutes=args.max_minutes,
                    max_steps=args.max_steps, train_args=args.train_args, quick=args.quick)
    res = dict(settings=settings, machine=prior.get("machine", machine),
               command=prior.get("command", cmd), stopped=why,
               minutes=sum(p["minutes"] for p in pieces), pieces=pieces, evals=evals,
               crossings=crossed)
    if prior["pieces"]:
        res["machine"]["loadavg_end"] = machine["loadavg_end"]
    publish(res, out, args)
    if why in ("interrupted", "max_minutes"):
        print(f"Cut after {res['minutes']:.1f} minutes: continue with `python "
              f"scripts/bench_time_to_skill.py --out {args.out} --resume` (with a larger "
              f"--max-minutes after a --max-minutes stop).")
    return code


def carried(crossed: list[dict], before) -> list[dict]:
    """`crossed` with the scores an earlier command gave the same crossings."""
    for c, b in zip(crossed, before):
        if b["steps"] == c["steps"]:
            c.update(b)
    return crossed


def score(out: Path, crossed: list[dict], evals: list[dict], args, log) -> None:
    import torch

    torch.set_num_threads(1)  # evaluation workers run one thread each
    confirm(out / "run", crossed, evals, args.confirm_episodes, args.confirm_tries, log)


def publish(res: dict, out: Path, args) -> int:
    """Write results.json and curves.png (and their copies) and print the report."""
    from agent.files import atomic_write

    data = (json.dumps(res, indent=1) + "\n").encode()
    png = render_png(res)
    for path in filter(None, (out / "results.json", args.json)):
        atomic_write(Path(path), lambda f: f.write(data))
    for path in filter(None, (out / "curves.png", args.png)):
        atomic_write(Path(path), lambda f: f.write(png))
    print(report(res))
    print(f"\nResults: {out / 'results.json'}, chart: {out / 'curves.png'}, run: {out / 'run'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
