"""The evaluation protocol: how one episode is played and scored, shared by the training loop's
periodic evaluation, `atari-agent play` and `atari-agent evaluate`.

Protocol (Machado et al. 2018): sticky actions 0.25; an episode ends at game over (a lost life is
not an end); the raw game score; episodes truncated at 108,000 emulator frames (30 minutes);
up to 30 no-op frames at the start; actions epsilon-greedy with `explore.eval_epsilon` (0.001,
not training's 0.01) so a policy that stalls cannot stall forever. Episode i of a run seeded s
plays on an env seeded from (s, i) with its own epsilon stream, so an episode's result depends
only on (policy, s, i): the same in one process or spread over workers, in any order.

This module plays episodes in the calling process; the command's worker pool, table and JSON
are agent/evaluate.py's, so training needs none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.config import EnvConfig
from agent.diagnostics import BUTTON_KEYS

PROTOCOL = {"repeat_action_probability": 0.25, "terminal_on_life_loss": False,
            "max_frames": 108_000, "noop_max": 30}
"""The EnvConfig fields every evaluation sets, whatever the training run used."""


def protocol_config(env: EnvConfig, **overrides) -> EnvConfig:
    """The training env's config with the evaluation protocol's settings (and `overrides`)."""
    return env.replace(**{**PROTOCOL, **overrides})


@dataclass
class Episode:
    score: float
    """Raw game score."""
    length: int
    """Agent steps."""
    truncated: bool = False
    """Ended by the frame cap rather than by game over."""
    buttons: tuple[int, ...] = (0, 0, 0, 0)
    """Agent steps that pressed each documented button combination (noop, ZAP, FIRE,
    FIRE+ZAP; epsilon's random draws included): how much a policy leans on ZAP, e.g. Phoenix's
    shield, which freezes the ship while it is up."""


def episode_streams(seed: int, index: int) -> tuple[int, np.random.Generator]:
    """Episode `index` of a run seeded `seed`: its env seed and its epsilon-draw generator."""
    env_seed, rng_seed = np.random.SeedSequence([seed, index]).generate_state(2)
    return int(env_seed & 0x7FFFFFFF), np.random.default_rng(int(rng_seed))


def play_episode(env, act: Callable[[np.ndarray], int] | None, rng: np.random.Generator,
                 epsilon: float) -> Episode:
    """One whole episode on a fresh `env`; `act(stack) -> action`, None for a random policy."""
    n = len(env.actions)
    button_of = env.actions.buttons
    pressed = [0] * len(BUTTON_KEYS)
    obs = env.reset()
    while True:
        if act is None or rng.random() < epsilon:
            action = int(rng.integers(n))
        else:
            action = act(obs)
        pressed[button_of[action]] += 1
        s = env.step(action)
        if s.terminated or s.truncated:
            return Episode(float(env.episode_score), int(env.episode_steps), bool(s.truncated),
                           tuple(pressed))


def run_episodes(make_env: Callable, act: Callable[[np.ndarray], int] | None, episodes: int,
                 seed: int, epsilon: float) -> list[Episode]:
    """Play `episodes` episodes in this process; `make_env(env_seed)` builds an env with the
    protocol's config (see `protocol_config`)."""
    results = []
    for i in range(episodes):
        env_seed, rng = episode_streams(seed, i)
        env = make_env(env_seed)
        try:
            results.append(play_episode(env, act, rng, epsilon))
        finally:
            env.close()
    return results


def summarize(episodes: list[Episode]) -> dict:
    """Score statistics of `episodes` (at least one): count, mean, std, median, min, max, mean
    length in agent steps, and the share of all their steps that pressed each button
    combination (`buttons`, keyed as the training rows' distributions)."""
    scores = np.array([e.score for e in episodes], np.float64)
    pressed = np.sum([e.buttons for e in episodes], axis=0, dtype=np.float64)
    return {"episodes": len(episodes), "mean": float(scores.mean()), "std": float(scores.std()),
            "median": float(np.median(scores)), "min": float(scores.min()),
            "max": float(scores.max()),
            "mean_length": float(np.mean([e.length for e in episodes])),
            "buttons": dict(zip(BUTTON_KEYS, (pressed / max(pressed.sum(), 1.0)).tolist(),
                                strict=True))}
