"""`atari-agent demo`: README's first command. A short training run with the settings of
agent/presets/demo.toml (a game and a data-efficient configuration chosen by measurement to
learn within a few CPU minutes), saved like any run, then the trained agent and a uniformly
random policy scored under the same evaluation protocol (agent/evaluate.py), and one line that
says whether the agent beats random by more than chance: the difference of the means in
standard errors of that difference (3 or more: clearly better)."""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

from agent import files
from agent.checkpoint import CheckpointStore
from agent.config import Config, load_toml
from agent.evaluate import checkpoint_targets, evaluate, protocol_line, random_target, table
from agent.outputs import check_output
from agent.report import count
from agent.runs import new_run_dir
from agent.train import Trainer

PRESET = Path(__file__).parent / "presets" / "demo.toml"
MIN_STEPS = 2_000
BAR = 3.0
"""Standard errors of the difference by which the agent must beat random to "clearly" beat it."""


def demo_config(game: str | None, steps: int | None, runs_dir: str) -> Config:
    """agent/presets/demo.toml, on `game` and for `steps` when given. A budget below the
    preset's is scaled: learning starts by a quarter of it, exploration decays within its first
    two thirds and the periodic evaluation comes at least twice; one checkpoint, at the end."""
    base = load_toml(PRESET, {"env": {"game": game}} if game is not None else None)
    steps = base.run.total_steps if steps is None else steps
    if steps < MIN_STEPS:
        raise ValueError(f"--steps must be at least {MIN_STEPS:,} for a demo, got {steps:,}")
    run = base.run
    return base.replace(
        learner={"learning_starts": min(base.learner.learning_starts, steps // 4)},
        explore={"eps_decay_steps": min(base.explore.eps_decay_steps, steps * 2 // 3)},
        replay={"capacity": max(base.replay.capacity, min(steps, 1_000_000))},
        run={"total_steps": steps, "runs_dir": runs_dir, "checkpoint_every": steps,
             "eval_every": min(run.eval_every, steps // 2) if run.eval_every else 0})


def comparison(agent: dict, rand: dict) -> dict:
    """The agent's mean against random's: the difference, its standard error (sample standard
    deviations, ddof 1, of two independent samples) and their ratio z."""
    def var_of_mean(r: dict) -> float:
        s = r["scores"]
        return statistics.variance(s) / len(s) if len(s) > 1 else 0.0

    diff = agent["mean"] - rand["mean"]
    se = math.sqrt(var_of_mean(agent) + var_of_mean(rand))
    z = diff / se if se > 0 else (math.inf if diff > 0 else -math.inf if diff < 0 else 0.0)
    return {"difference": diff, "se_difference": se, "z": z, "bar": BAR,
            "beats_random": bool(z >= BAR)}


def verdict(agent: dict, rand: dict, cmp: dict) -> str:
    """One line a newcomer reads: the two scores, and whether the difference is beyond chance."""
    n = f"{agent['episodes']} and {rand['episodes']} episodes" \
        if agent["episodes"] != rand["episodes"] else f"{agent['episodes']} episodes each"
    head = (f"the trained agent scored {agent['mean']:,.1f} on average, a random policy "
            f"{rand['mean']:,.1f} ({n})")
    z = "many" if math.isinf(cmp["z"]) else f"{cmp['z']:.1f}"
    if cmp["beats_random"]:
        return (f"{head}: {cmp['difference']:,.1f} points better, {z} standard errors of the "
                f"difference, so it clearly beats random (the bar is {BAR:g}).")
    return (f"{head}: not clearly better than random ({z} standard errors of the difference; "
            f"the bar is {BAR:g}); train longer, e.g. `atari-agent demo --steps 100000`.")


def demo(game: str | None = None, steps: int | None = None, episodes: int = 30,
         runs_dir: str = "runs", json_path: str | None = None) -> int:
    if episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {episodes}")
    out = None if json_path is None else check_output(json_path, None, "--json")
    t0 = time.monotonic()
    config = demo_config(game, steps, runs_dir)
    game, steps = config.env.game, config.run.total_steps
    run_dir = new_run_dir(runs_dir, game, "")
    print(f"demo: training {game} ({config.env.action_set} actions) for {steps:,} agent steps "
          f"in {run_dir}, with the settings of `atari-agent train --preset demo`")
    trainer = Trainer(config, run_dir)
    result = trainer.run()
    train_s = time.monotonic() - t0
    if result.state != "finished":
        print(f"demo: training {result.state} at step {result.steps:,}")
        return 1
    store = CheckpointStore(run_dir)
    latest, kept = store.latest(), store.index.get("best")
    best = None if kept is None else store.dir / kept["file"]
    # The young agent's greedy policy swings between good and useless from one checkpoint to
    # the next: the periodic evaluation's best one is the agent the demo shows, as a user
    # would keep it; the latest one when none was kept (every evaluation in an unhealthy spell).
    agent_ckpt = best if best is not None else latest
    print(f"\ndemo: trained {result.steps:,} steps in {train_s / 60:.1f} min; saved {latest}"
          + (f"; best by the periodic evaluation: {best}" if best is not None else ""))
    print(f"demo: evaluating {count(episodes, 'episode')} per policy in worker processes")
    targets = checkpoint_targets([agent_ckpt], {})
    targets.append(random_target(config.env, {}))
    results = evaluate(targets, episodes, seed=12_345, epsilon=config.explore.eval_epsilon,
                       progress=sys.stderr)
    total_s = time.monotonic() - t0
    print(table(results))
    print(protocol_line(results))
    agent = next(r for r in results if r["checkpoint"] is not None)
    rand = next(r for r in results if r["checkpoint"] is None)
    cmp = comparison(agent, rand)
    line = verdict(agent, rand, cmp)
    print(f"\ndemo, {total_s / 60:.1f} min in all: {line}")
    if out is not None:
        summary = {"game": game, "action_set": config.env.action_set, "steps": result.steps,
                   "train_s": round(train_s, 1), "total_s": round(total_s, 1),
                   "run_dir": str(run_dir), "episodes": episodes, **cmp,
                   "agent": agent, "random": rand, "verdict": line}
        data = json.dumps(summary, indent=2).encode()
        try:
            files.atomic_write(out, lambda f: f.write(data + b"\n"))
            print(f"demo: json: {out}")
        except files.WriteError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 1
    print(f"\nnext: `atari-agent play {agent_ckpt}` to watch it, `atari-agent evaluate {run_dir}` "
          f"for more episodes, `atari-agent plot {run_dir}` for its curves")
    return 0

