"""`atari-agent demo`: README's first command. A short training run on the default game with
settings scaled down to a few CPU minutes, saved like any run, then the trained agent and a
uniformly random policy scored under the same evaluation protocol (agent/evaluate.py)."""

from __future__ import annotations

import time

from agent.checkpoint import CheckpointStore
from agent.config import Config, from_dict
from agent.evaluate import protocol_config, run_episodes, summarize
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
    print(f"demo: evaluating {episodes} episodes per policy (sticky actions 0.25, game over ends "
          f"an episode, raw score, epsilon {config.explore.eval_epsilon})")
    env_config = protocol_config(config.env)
    trained = summarize(run_episodes(lambda s: trainer.make_env(s, env_config),
                                     trainer.learner.act, episodes, seed=12_345,
                                     epsilon=config.explore.eval_epsilon))
    random = summarize(run_episodes(lambda s: trainer.make_env(s, env_config), None, episodes,
                                    seed=12_345, epsilon=1.0))
    print(f"\n{'policy':<10} {'episodes':>8} {'mean':>9} {'std':>8} {'min':>8} {'max':>8} "
          f"{'length':>8}")
    for name, s in (("trained", trained), ("random", random)):
        print(f"{name:<10} {s['episodes']:>8} {s['mean']:>9.1f} {s['std']:>8.1f} "
              f"{s['min']:>8.0f} {s['max']:>8.0f} {s['mean_length']:>8.0f}")
    return 0
