"""A plain NumPy/Python reference for the frame-ring replay, written from the documented semantics.

It keeps the whole history as a list of episodes (no ring, no flags) and answers, for a logical
index, whether it is a valid transition and what a sample of it must contain. The native replay is
compared with it on long random streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Episode:
    first: int  # logical index of the first frame
    frames: list[np.ndarray] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    end: str = "open"  # "open", "terminated" or "truncated"


@dataclass
class Expected:
    obs: np.ndarray
    action: int
    reward: float
    discount: float
    next_obs: np.ndarray


class ReferenceReplay:
    def __init__(self, capacity: int, stack: int, n_step: int, gamma: float):
        self.capacity, self.stack, self.n_step, self.gamma = capacity, stack, n_step, gamma
        self.episodes: list[Episode] = []
        self.total = 0  # frames written
        self.where: dict[int, tuple[int, int]] = {}  # logical index -> (episode, step)

    # writing ------------------------------------------------------------------
    def reset(self, frame: np.ndarray) -> None:
        if self.episodes and self.episodes[-1].end == "open" and self.episodes[-1].actions:
            self.episodes[-1].end = "truncated"
        elif self.episodes and self.episodes[-1].end == "open":
            self.episodes[-1].end = "abandoned"  # a reset without a single step
        self.episodes.append(Episode(first=self.total))
        self._frame(frame)

    def add(self, action: int, reward: float, terminated: bool, truncated: bool, frame) -> None:
        ep = self.episodes[-1]
        ep.actions.append(action)
        ep.rewards.append(reward)
        self._frame(frame)
        if terminated:
            ep.end = "terminated"
        elif truncated:
            ep.end = "truncated"

    def _frame(self, frame: np.ndarray) -> None:
        ep = self.episodes[-1]
        self.where[self.total] = (len(self.episodes) - 1, len(ep.frames))
        ep.frames.append(frame.copy())
        self.total += 1

    # reading ------------------------------------------------------------------
    @property
    def live_start(self) -> int:
        return max(0, self.total - self.capacity + 1)

    def expected(self, index: int) -> Expected | None:
        """What sampling `index` must give, or None if it is not a valid transition."""
        if index not in self.where or index < self.live_start:
            return None
        e, t = self.where[index]
        ep = self.episodes[e]
        steps = len(ep.actions)
        if t >= steps:
            return None  # a final or pending observation: no action taken from it
        if ep.first + max(0, t - self.stack + 1) < self.live_start:
            return None  # part of the stack was overwritten
        if t + self.n_step <= steps:
            m = self.n_step
            # the bootstrap frame t + n exists (an open episode's pending frame counts)
        elif ep.end in ("terminated", "truncated"):
            m = steps - t
        else:
            return None  # open episode: the n-step window is not complete yet
        terminal = ep.end == "terminated" and t + m == steps
        ret = sum(self.gamma**j * ep.rewards[t + j] for j in range(m))
        return Expected(
            obs=self._stack(ep, t),
            action=ep.actions[t],
            reward=ret,
            discount=0.0 if terminal else self.gamma**m,
            next_obs=self._stack(ep, t + m),
        )

    def _stack(self, ep: Episode, t: int) -> np.ndarray:
        return np.stack([ep.frames[max(0, t - self.stack + 1 + j)] for j in range(self.stack)])

    def valid_indices(self) -> list[int]:
        return [i for i in range(self.live_start, self.total) if self.expected(i) is not None]


class ReferenceStreams:
    """S independent streams, each a ReferenceReplay of capacity // S, named by the global index
    G = L * S + s (L the logical index within stream s), as the native multi-stream replay
    names its transitions."""

    def __init__(self, capacity: int, streams: int, stack: int, n_step: int, gamma: float):
        self.streams = streams
        self.stream_capacity = capacity // streams
        self.refs = [ReferenceReplay(self.stream_capacity, stack, n_step, gamma)
                     for _ in range(streams)]

    def __getitem__(self, s: int) -> ReferenceReplay:
        return self.refs[s]

    @property
    def total(self) -> int:
        return sum(r.total for r in self.refs)

    def split(self, index: int) -> tuple[int, int]:
        """(stream, logical index) of a global index."""
        return index % self.streams, index // self.streams

    def expected(self, index: int) -> Expected | None:
        if index < 0:
            return None
        s, logical = self.split(index)
        return self.refs[s].expected(logical)

    def valid_indices(self) -> list[int]:
        return sorted(L * self.streams + s for s, r in enumerate(self.refs)
                      for L in r.valid_indices())
