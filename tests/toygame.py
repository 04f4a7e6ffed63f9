"""A tiny deterministic test game where FIRE is the optimal button.

Observations: a bright bar whose row walks down the screen, one row per step, so every state of
an episode looks different. Rewards: FIRE +1, FIRE+ZAP +0.25, noop and ZAP 0. An episode lasts
`LENGTH` steps and ends as terminated. The game has AtariEnv's interface, so the trainer drives
it exactly as it drives an ALE game.
"""

from __future__ import annotations

import numpy as np

from agent.config import EnvConfig
from agent.env import Step
from agent.games import BUTTONS, ActionSet

LENGTH = 24
REWARD = {0: 0.0, 1: 0.0, 2: 1.0, 3: 0.25}


class FireGame:
    def __init__(self, seed: int = 0, config: EnvConfig | None = None):
        self.config = config or EnvConfig(frame_shape=(36, 36), stack=2)
        self.actions = ActionSet("fire_game", "documented", BUTTONS,
                                 ("NOOP", "DOWN", "FIRE", "DOWNFIRE"), (0, 1, 2, 3))
        h, w = self.config.frame_shape
        self._stack = np.zeros((self.config.stack, h, w), np.uint8)
        self.t = 0
        self.episode_score = 0.0
        self.episode_steps = 0

    @property
    def observation(self) -> np.ndarray:
        return self._stack

    def share_stack(self, buffer: np.ndarray) -> None:
        """Keep the acting stack in `buffer` (a worker pool's shared row), as AtariEnv does."""
        buffer[...] = self._stack
        self._stack = buffer

    def _frame(self) -> np.ndarray:
        h, w = self.config.frame_shape
        frame = np.full((h, w), 30, np.uint8)
        row = (self.t * h) // LENGTH
        frame[row:row + 3, :] = 220
        return frame

    def reset(self, out: np.ndarray | None = None) -> np.ndarray:
        self.t = 0
        self.episode_score = 0.0
        self.episode_steps = 0
        frame = self._frame()
        if out is not None:
            out[...] = frame
        self._stack[:] = frame
        return self._stack

    def step(self, action: int, out: np.ndarray | None = None) -> Step:
        if not 0 <= int(action) < 4:
            raise ValueError(f"action must be in [0, 3], got {action!r}")
        reward = REWARD[int(action)]
        self.t += 1
        self.episode_score += reward
        self.episode_steps += 1
        frame = self._frame()
        if out is not None:
            out[...] = frame
        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = frame
        done = self.t >= LENGTH
        return Step(reward=reward, raw_reward=reward, terminated=done, truncated=False,
                    life_lost=False, learn_terminal=done)

    def get_state(self) -> dict:
        return {"t": self.t, "stack": self._stack.copy(), "episode_score": self.episode_score,
                "episode_steps": self.episode_steps}

    def set_state(self, state: dict) -> None:
        self.t = int(state["t"])
        self._stack[...] = state["stack"]
        self.episode_score = float(state["episode_score"])
        self.episode_steps = int(state["episode_steps"])

    def close(self) -> None:
        pass


def make_fire_game(seed: int, config: EnvConfig) -> FireGame:
    return FireGame(seed, config)
