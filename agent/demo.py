"""`atari-agent demo`: README's first command. A short training run on the default game with
settings scaled down to a few CPU minutes, saved like any run, then the trained agent and a
uniformly random policy scored under the same evaluation protocol (agent/evaluate.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from agent import checkpoint
from agent.checkpoint import CheckpointError, CheckpointStore
from agent.config import Config, from_dict
from agent.evaluate import checkpoint_targets, evaluate, protocol_line, random_target, table
from agent.report import count
from agent.runs import new_run_dir
from agent.train import Trainer


def demo_config(game: str, steps: int, runs_dir: str) -> Config:
    """The defaults, scaled to `steps`: a smaller replay, an earlier start, a faster epsilon
    decay and target sync. Everything else (the clips, double DQN, n-step, Adam) as in training.
    """
    if steps < 2_000:
        raise ValueError(f"--steps must be at least 2,000 for a demo, got {steps:,}")
    return from_dict({
        "env": {"game": game},
        "learner": {"learning_starts": min(5_000, steps // 4), "target_update": 500},
        "explore": {"eps_decay_steps": steps * 2 // 3, "eps_end": 0.05},
        "replay": {"capacity": max(steps, 10_000)},
        "run": {"total_steps": steps, "runs_dir": runs_dir, "checkpoint_every": max(steps // 3, 1),
                "eval_every": 0, "report_seconds": 15.0},
    }, source="demo settings")


def demo(game: str = "phoenix", steps: int = 30_000, episodes: int = 5,
         runs_dir: str = "runs") -> int:
    config = demo_config(game, steps, runs_dir)
    run_dir = new_run_dir(runs_dir, game, "")
    print(f"demo: training {game} for {steps:,} agent steps in {run_dir} "
          f"(see `atari-agent train --help` for a full run)")
    t0 = time.monotonic()
    trainer = Trainer(config, run_dir)
    result = trainer.run()
    train_s = time.monotonic() - t0
    if result.state != "finished":
        print(f"demo: training {result.state} at step {result.steps:,}")
        return 1
    latest = CheckpointStore(run_dir).latest()
    print(f"\ndemo: trained {result.steps:,} steps in {train_s / 60:.1f} min; saved {latest}")
    print(f"demo: evaluating {count(episodes, 'episode')} per policy in worker processes")
    targets = checkpoint_targets([latest], {})
    targets.append(random_target(config.env, {}))
    results = evaluate(targets, episodes, seed=12_345, epsilon=config.explore.eval_epsilon,
                       progress=sys.stderr)
    print(table(results))
    print(protocol_line(results))
    agent = next(r for r in results if r["checkpoint"] is not None)
    keep_as_best(run_dir, latest, agent["mean"])
    print(f"\nnext: `atari-agent play {latest}` to watch it, `atari-agent evaluate {run_dir}` "
          f"for more episodes, `atari-agent plot {run_dir}` for its curves")
    return 0


def keep_as_best(run_dir: Path, path: Path, score: float) -> None:
    """Record the demo's evaluation of checkpoint `path` where a training run records its
    periodic ones (best.pt and the index's best score, which `atari-agent runs` shows), unless
    the checkpoint is unhealthy (as training keeps no unhealthy best) or a better one is kept.
    A failed write is said and the demo goes on: its scores are printed already."""
    try:
        saved = checkpoint.load(path)
        if saved.get("healthy", True):
            # (a copy of the weights: the periodic checkpoint's replay snapshot is not its own)
            payload = {k: v for k, v in saved.items() if k != "replay_file"}
            CheckpointStore(run_dir).save_best(payload, int(saved["counters"]["steps"]), score)
    except CheckpointError as exc:
        print(f"demo: the evaluation is not recorded as the run's best: {exc}", file=sys.stderr)
