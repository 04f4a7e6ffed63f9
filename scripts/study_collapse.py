"""The seed's collapse, reproduced and caught (issue 16): the same game trained twice, side by
side, with (a) the defaults and (b) the broken configuration of the system we learn from:
gradient-norm clipping off, TD-target clipping off, a learning rate 10x the default's. What the
seed watched is reported for both over time (Agree%, loss, Q range, ClipΔ), with the watchdog's
events (divergence, roll-back, halt), the periodic evaluations (the protocol) and the seed's
success indicators for (a).

Run from the repository root (the package installed):

    python scripts/study_collapse.py                    # Pong, 300,000 steps each (~1 h here)
    python scripts/study_collapse.py --quick            # smoke: a minute or two
    python scripts/study_collapse.py --summarize-only --out DIR   # runs made by hand

What runs: two `atari-agent train --game GAME --total-steps N --threads T --checkpoint-every C
--eval-every E --eval-episodes K --runs-dir OUT --name a-defaults` processes at once (b-broken
adds `--max-grad-norm 0 --td-clip 0 --lr 10*default`; with --mse a third, c-broken-mse, is
b-broken with a squared-error loss: `--huber-delta 1e9`), then whatever follows `--`, for all.
Checkpoints come often (every C steps) so that a roll-back has a recent healthy checkpoint to
return to. A run that ended in OUT (finished, or halted by the watchdog) is reused as it is; one
cut short continues with `--resume` (so a stopped study goes on). Ctrl-C stops the runs by
their pids (they save).

Output in --out (default study-collapse/): a-defaults/, b-broken/, c-broken-mse/ (the runs:
`atari-agent plot`, `play` and `evaluate` read them), a.log, b.log, c.log (their output),
results.json (the commands; per run the diagnostics over time, events, evaluations,
indicators, and its last checkpoint scored over --final-episodes protocol episodes beside the
random policy) and collapse.png (`atari-agent plot` of the runs). A table at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchio  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("a-defaults", "b-broken")
MSE_RUN = "c-broken-mse"
STOP_GRACE_S = 300.0  # a stopped run saves its checkpoint first
ENDED = {"finished": 0, "halted": 3}
"""A run's end states that are results (the watchdog's halt is one), with train's exit codes."""
TABLE_ROWS = 12  # diagnostics rows in the printed table, evenly spaced over the run
QUICK = dict(steps=2_000, report_seconds=1.0, checkpoint_every=1_000, eval_every=1_000,
             eval_episodes=1, final_episodes=2,
             train_args=["--learning-starts", "500", "--capacity", "5000", "--envs", "1",
                         "--check-every", "50"])


def run_args(name: str, lr_factor: float) -> list[str]:
    """What a run changes from the defaults. (b) the seed's broken configuration: no gradient
    clip, no TD-target clip, lr x factor; (c) the same with a squared-error loss (a Huber
    threshold far above any TD error) instead of Huber's."""
    from agent.config import LearnerConfig

    broken = ["--max-grad-norm", "0", "--td-clip", "0",
              "--lr", f"{LearnerConfig().lr * lr_factor:g}"]
    return {RUNS[0]: [], RUNS[1]: broken, MSE_RUN: [*broken, "--huber-delta", "1e9"]}[name]


def run_names(args) -> tuple[str, ...]:
    return (*RUNS, MSE_RUN) if args.mse else RUNS


def train_command(args, out: Path, name: str) -> list[str]:
    run_dir = out / name
    if _state(run_dir) is not None:
        start = ["--resume", str(run_dir)]  # flags below match the saved config
    else:
        start = ["--runs-dir", str(out), "--name", name]
    return [sys.executable, "-m", "agent", "train", *start, "--game", args.game,
            "--total-steps", str(args.steps), "--threads", str(args.threads),
            "--checkpoint-every", str(args.checkpoint_every), "--eval-every",
            str(args.eval_every), "--eval-episodes", str(args.eval_episodes),
            "--report-seconds", f"{args.report_seconds:g}",
            *run_args(name, args.lr_factor),
            *args.train_args]


def _state(run_dir: Path) -> str | None:
    """The run's state from status.json ("finished", "interrupted", ...) when it has
    checkpoints; None for a run not started."""
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None
    if not any((run_dir / "checkpoints").glob("ckpt-*.pt")) and status.get("state") not in ENDED:
        return None
    return status.get("state")


def _check_same(args, run_dir: Path) -> None:
    """An ended run is reused only for the same game and budget."""
    import tomllib

    config = tomllib.loads((run_dir / "config.toml").read_text())
    have = (config["env"]["game"], config["run"]["total_steps"])
    if have != (args.game, args.steps):
        raise SystemExit(f"{run_dir} is an ended run of {have[0]} for {have[1]:,} steps, not "
                         f"{args.game} for {args.steps:,}: choose another --out or remove it")


def train(args, out: Path, log) -> dict[str, list[str]]:
    """Both runs to their end (at once); the commands run (empty for a reused run)."""
    commands: dict[str, list[str]] = {}
    procs: dict[str, subprocess.Popen] = {}
    logs = []
    try:
        for name in run_names(args):
            if (state := _state(out / name)) in ENDED:
                _check_same(args, out / name)
                log(f"{name}: {state} in an earlier run of this script, reused")
                commands[name] = []
                continue
            cmd = commands[name] = train_command(args, out, name)
            log(f"{name}: " + " ".join(cmd[2:]))
            logs.append(open(out / f"{name[0]}.log", "a"))
            procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=logs[-1],
                                           stderr=subprocess.STDOUT)
        for name, proc in procs.items():
            proc.wait()
            log(f"{name}: exit status {proc.returncode}")
    finally:
        benchio.stop_runs(procs, log, STOP_GRACE_S)
        for f in logs:
            f.close()
    failed = [f"{n} (exit status {p.returncode}, see {out / (n[0] + '.log')})"
              for n, p in procs.items() if p.returncode not in ENDED.values()]
    if failed:
        raise SystemExit("training failed: " + "; ".join(failed))
    return commands


# ---------------------------------------------------------------------------- the summary
def _finite(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def random_agreement(config: dict) -> float:
    """Agree% of a fixed greedy action against uniformly random replay actions: 100 / the
    number of distinct ALE actions (twins count as one, as Agree% counts them)."""
    from agent.games import action_set

    env = config["env"]
    return 100.0 / len(set(action_set(env["game"], env["action_set"]).outputs()))


def summarize(run_dir: Path) -> dict:
    """What the seed watched, from the run's metrics.jsonl and config.toml."""
    import tomllib

    from agent.plot import load_metrics

    rows, events = load_metrics(run_dir)
    config = tomllib.loads((run_dir / "config.toml").read_text())
    rows = [r for r in rows if r.get("loss") is not None]  # learner rows (after a check)
    rows = list({r["steps"]: r for r in rows}.values())  # a final repeat row once
    keys = ("steps", "agree", "loss", "q_min", "q_max", "grad_norm", "clip_delta", "epsilon")
    series = [{k: r.get(k) for k in keys} for r in rows]
    agree = _finite(r["agree"] for r in series)
    loss = _finite(r["loss"] for r in series)
    q = _finite([r["q_min"] for r in series] + [r["q_max"] for r in series])
    clip = _finite(r["clip_delta"] for r in series)
    random = random_agreement(config)
    top = max(agree, default=float("nan"))
    watchdog = [{k: e.get(k) for k in ("event", "steps", "reasons", "action", "rollback_to",
                                       "checkpoint_steps", "message")}
                for e in events if e.get("event") in ("divergence", "rollback", "halt")]
    evals = [{k: e[k] for k in ("steps", "mean", "std", "episodes")}
             for e in events if e.get("event") == "eval"]
    limits = config["watchdog"]
    indicators = {
        # the seed's success indicators for a healthy run
        "agree_rises": bool(agree) and top >= 2 * random,
        "agree_holds": bool(agree) and agree[-1] >= top - limits["agree_drop"],
        "loss_bounded": bool(loss) and max(loss) <= limits["loss_factor"] * _median(loss),
        "q_under_100": bool(q) and max(abs(v) for v in q) < 100,
        "clip_delta_below_1_sometimes": any(c < 1 for c in clip),
    }
    try:
        state = json.loads((run_dir / "status.json").read_text()).get("state")
    except (OSError, ValueError):
        state = None
    return dict(
        run=run_dir.name, state=state, learner={k: config["learner"][k] for k in
                                   ("lr", "max_grad_norm", "td_clip", "huber_delta", "n_step",
                                    "double_dqn")},
        steps=series[-1]["steps"] if series else 0, random_agree=random,
        agree=dict(first=agree[0] if agree else None, max=top if agree else None,
                   last=agree[-1] if agree else None),
        loss=dict(median=_median(loss), max=max(loss, default=None)),
        q=dict(min=min(q, default=None), max=max(q, default=None)),
        clip_delta=dict(min=min(clip, default=None),
                        below_1=sum(c < 1 for c in clip) / len(clip) if clip else None),
        grad_norm_max=max(_finite(r["grad_norm"] for r in series), default=None),
        watchdog=watchdog, evals=evals, indicators=indicators, series=series)


def score_runs(run_dirs: list[Path], episodes: int, log) -> tuple[list[dict | None], dict]:
    """Each run's last checkpoint (a halted run's: its last healthy one, which the halt kept;
    None for a run without one) and the random policy, scored under the protocol: `episodes`
    episodes at seed 0."""
    import tomllib

    import torch

    from agent.checkpoint import CheckpointStore
    from agent.config import from_dict
    from agent.evaluate import checkpoint_targets, evaluate, random_target

    torch.set_num_threads(1)  # the evaluation workers run one thread each
    paths = [CheckpointStore(d).latest() for d in run_dirs]
    targets = checkpoint_targets([p for p in paths if p is not None], {})
    env = from_dict(tomllib.loads((run_dirs[0] / "config.toml").read_text()),
                    source=str(run_dirs[0] / "config.toml")).env
    targets.append(random_target(env, {}))
    log(f"scoring {', '.join(t.label for t in targets)}: {episodes} protocol episodes each")
    keys = ("checkpoint", "training_steps", "episodes", "mean", "std", "buttons")
    *scored, random = [{k: r[k] for k in keys} for r in evaluate(targets, episodes, seed=0)]
    return [None if p is None else scored.pop(0) for p in paths], random


def network_alive(checkpoint: Path, frames: int = 128) -> dict:
    """How much of a checkpoint's network still responds to what it sees, on `frames`
    observations of random play (the protocol's env, seed 0; every 8th step): the share of the
    last conv layer's units (channel x position) on for at least one of them, and the Q-values'
    std across them (q_state_std, the watchdog's dead-network measure)."""
    import numpy as np
    import torch

    from agent.env import AtariEnv
    from agent.policy import load_agent
    from agent.protocol import protocol_config

    agent = load_agent(checkpoint)
    net = agent.network.float()
    env = AtariEnv(protocol_config(agent.config.env), 0)
    rng = np.random.default_rng(0)
    obs, t = [], 0
    try:
        env.reset()
        while len(obs) < frames:
            s = env.step(int(rng.integers(len(env.actions))))
            t += 1
            if t % 8 == 0:
                obs.append(env.observation.copy())
            if s.terminated or s.truncated:
                env.reset()
    finally:
        env.close()
    x = torch.from_numpy(np.stack(obs))
    with torch.no_grad():
        units_on = (net.features(x.float() / 255.0) > 0).any(dim=0).float().mean()
        q = net(x).float()
    return {"units_on": float(units_on), "q_state_std": float(q.std(dim=0).mean())}


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


def _cell(x, spec=".3g") -> str:
    return "-" if x is None else format(x, spec)


def _event(e: dict) -> str:
    """One watchdog event in a few words: "dead network at 22,996 -> rollback to 20,000"."""
    if e["event"] == "divergence":
        what = " & ".join(r.split(":")[0] for r in e.get("reasons") or []) or "divergence"
        return f"{what} at {e['steps']:,} -> {e['action']}"
    if e["event"] == "rollback":
        return f"restored step {e['checkpoint_steps']:,}"
    return f"halted at {e['steps']:,}"


def report(res: dict) -> str:
    lines = []
    for s in res["runs"]:
        lines += ["", f"## {s['run']}: lr {s['learner']['lr']:g}, max_grad_norm "
                  f"{s['learner']['max_grad_norm']:g}, td_clip {s['learner']['td_clip']:g}, "
                  f"huber_delta {s['learner']['huber_delta']:g} "
                  f"({s['state'] or 'state unknown'} at {s['steps']:,} steps)", ""]
        n = len(s["series"])
        pick = sorted({round(i * (n - 1) / (TABLE_ROWS - 1)) for i in range(TABLE_ROWS)} if n
                      else set())
        lines += benchio.table(
            ("steps", "Agree%", "loss", "Q min", "Q max", "GradNorm", "ClipΔ"),
            ((f"{r['steps']:,}", _cell(r["agree"], ".1f"), _cell(r["loss"]), _cell(r["q_min"]),
              _cell(r["q_max"]), _cell(r["grad_norm"]), _cell(r["clip_delta"], ".2f"))
             for r in (s["series"][i] for i in pick)), "rrrrrrr")
        lines += ["", "evaluations (protocol): " + (", ".join(
            f"{e['steps']:,}: {e['mean']:.1f} ± {e['std']:.1f}" for e in s["evals"]) or "none")]
        lines += ["watchdog: " + (", ".join(map(_event, s["watchdog"])) or "no event")]
        if s.get("final"):
            f = s["final"]
            lines += [f"last checkpoint ({f['training_steps']:,} steps): {f['mean']:.1f} ± "
                      f"{f['std']:.1f} over {f['episodes']} protocol episodes (random "
                      f"{res['random']['mean']:.1f} ± {res['random']['std']:.1f}); "
                      f"{100 * f['units_on']:.0f}% of its last conv layer's units respond to "
                      f"random play's screens, Q std across them {f['q_state_std']:.2g}"]
        lines += [f"Agree% random level {s['random_agree']:.1f}; indicators: " + ", ".join(
            f"{k} {'yes' if v else 'NO'}" for k, v in s["indicators"].items())]
    return "\n".join(lines)


def parse_args(argv: list[str] | None):
    own, train_args = benchio.split_passthrough(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--game", default="pong", help="the game (pong)")
    p.add_argument("--steps", type=int, default=300_000, help="agent steps a run (300,000)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads a run (1: the two runs share the cores)")
    p.add_argument("--checkpoint-every", type=int, default=10_000,
                   help="agent steps between checkpoints (10,000): roll-back targets")
    p.add_argument("--eval-every", type=int, default=50_000,
                   help="agent steps between protocol evaluations (50,000)")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes an evaluation (10)")
    p.add_argument("--report-seconds", type=float, default=60.0,
                   help="seconds between a run's diagnostics rows (60)")
    p.add_argument("--final-episodes", type=int, default=30,
                   help="protocol episodes scoring each run's last checkpoint and the random "
                        "policy at the end (30)")
    p.add_argument("--lr-factor", type=float, default=10.0,
                   help="(b)'s learning rate over the default's (10)")
    p.add_argument("--mse", action="store_true",
                   help="also (c): (b) with a squared-error loss instead of Huber's")
    p.add_argument("--out", default="study-collapse", help="directory (study-collapse/)")
    p.add_argument("--json", metavar="FILE", help="also write results.json here")
    p.add_argument("--png", metavar="FILE", help="also write collapse.png here")
    p.add_argument("--summarize-only", action="store_true",
                   help="train nothing: summarize and score the runs in --out as they are (a "
                        "study cut short, or runs made by hand with the same commands)")
    p.add_argument("--quick", action="store_true", help="smoke: 2,000 steps a run")
    args = p.parse_args(own)
    args.train_args = train_args
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value if key != "train_args" else [*value, *train_args])
    for name in ("steps", "threads", "checkpoint_every", "eval_every", "eval_episodes",
                 "final_episodes"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not args.report_seconds > 0:
        p.error(f"--report-seconds must be positive, got {args.report_seconds:g}")
    if not args.lr_factor > 0:
        p.error(f"--lr-factor must be positive, got {args.lr_factor:g}")
    benchio.check_copy_paths(p, args.json, args.png)
    if args.summarize_only:
        missing = [n for n in run_names(args)
                   if not (Path(args.out) / n / "metrics.jsonl").is_file()]
        if missing:
            p.error(f"--summarize-only: no run {', '.join(missing)} in {args.out} (expected "
                    f"{', '.join(run_names(args))}, made by this script or its commands)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out, log, machine = benchio.start(args.out)  # SIGTERM then stops the runs by their pids
    commands = {} if args.summarize_only else train(args, out, log)
    machine["loadavg_end"] = benchio.loadavg()
    from agent.files import atomic_write
    from agent.plot import plot_runs

    names = run_names(args)
    runs = [summarize(out / name) for name in names]
    finals, random = score_runs([out / name for name in names], args.final_episodes, log)
    for run, final in zip(runs, finals, strict=True):
        run["final"] = final
        if final is not None:
            final.update(network_alive(Path(final["checkpoint"])))
    res = dict(settings=dict(game=args.game, steps=args.steps, threads=args.threads,
                             checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
                             eval_episodes=args.eval_episodes, lr_factor=args.lr_factor,
                             final_episodes=args.final_episodes, train_args=args.train_args,
                             quick=args.quick),
               machine=machine, commands=commands, runs=runs, random=random)
    data = (json.dumps(res, indent=1) + "\n").encode()
    for path in filter(None, (out / "results.json", args.json)):
        atomic_write(Path(path), lambda f: f.write(data))
    for path in filter(None, (out / "collapse.png", args.png)):
        plot_runs([out / name for name in run_names(args)], Path(path),
                  title=f"{args.game}: (a) defaults vs (b) no clips, lr x{args.lr_factor:g}"
                  + (", (c) (b) with squared error" if args.mse else ""))
    print(report(res))
    print(f"\nResults: {out / 'results.json'}, chart: {out / 'collapse.png'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
