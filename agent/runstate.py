"""What a checkpoint holds, and how a run is put back from one.

A checkpoint is one dict of plain data and tensors (read back with `weights_only=True`):

- game, layout (the action set), network (its spec), config (the run's, as a dict);
- learner: online and target weights, optimizer state, update counters;
- counters: steps (over all envs), episodes, collected, updates, incidents, rollbacks_in_row,
  envs; epsilon; scores (the last 100 episodes' raw scores);
- env: every env's emulator state (`AtariEnv.get_state`): one dict with one env, else a list
  in env order; rng: explore (the same shape: one bit-generator state, or a list), diag (the
  health monitor's), torch (the CPU generator);
- watchdog, last_check, probe, pending: the health monitor's history, probe batch and the
  per-update stats since its last check;
- healthy (added by the store), replay_file (the replay snapshot beside it, with
  --save-replay), saved_at.

One env keeps exactly the layout that checkpoints had before runs had several, so either reads
the other.
"""

from __future__ import annotations

import time

import torch

from agent.config import Config, to_dict


def payload(config: Config, actions, learner, collector, health, epsilon: float) -> dict:
    """The checkpoint of a run now (see the module docstring)."""
    envs = collector.state_dict()
    monitor = health.state_dict()
    one = collector.num_envs == 1
    return {
        "game": config.env.game,
        "layout": actions.layout(),
        "network": learner.online.spec(),
        "config": to_dict(config),
        "learner": learner.state_dict(),
        "counters": {"steps": envs["steps"], "episodes": envs["episodes"],
                     "collected": envs["collected"], "updates": learner.updates,
                     "incidents": monitor["incidents"],
                     "rollbacks_in_row": monitor["rollbacks_in_row"],
                     "envs": collector.num_envs},
        "epsilon": epsilon,
        "scores": envs["scores"],
        "rng": {"explore": envs["explore"][0] if one else envs["explore"],
                "diag": monitor["rng"], "torch": torch.get_rng_state()},
        "env": envs["env"][0] if one else envs["env"],
        "watchdog": monitor["watchdog"],
        "last_check": monitor["last_check"],
        "probe": monitor["probe"],
        "pending": monitor["pending"],
        "saved_at": time.time(),
    }


def saved_envs(saved: dict) -> int:
    """How many envs the run that wrote checkpoint `saved` stepped."""
    env = saved.get("env")
    return len(env) if isinstance(env, list) else 1


def restore(saved: dict, learner, collector, health, replay: dict | None) -> None:
    """Put a run back as `saved` left it: learner, envs, exploration, counters, health, RNGs
    (and the replay, when its snapshot is given). `saved` must be a checkpoint of a run with
    the same network, action set and number of envs (checked by the caller)."""
    learner.load_state_dict(saved["learner"])
    explore = saved["rng"]["explore"]
    n = saved["counters"]
    collector.load_state_dict({
        "env": saved["env"] if isinstance(saved["env"], list) else [saved["env"]],
        "explore": explore if isinstance(explore, list) else [explore],
        "steps": n["steps"], "episodes": n["episodes"], "collected": n["collected"],
        "scores": saved["scores"]}, replay)
    health.load_state_dict({
        "watchdog": saved["watchdog"], "last_check": saved["last_check"],
        "probe": saved["probe"], "pending": saved["pending"], "rng": saved["rng"]["diag"],
        "incidents": n["incidents"], "rollbacks_in_row": n["rollbacks_in_row"],
        "healthy": saved.get("healthy", True)})
    torch.set_rng_state(saved["rng"]["torch"])

