"""An Ape-X actor's work, without Ray: its envs, a CPU copy of the online network, its own
epsilon, and the chunks of experience it sends; and the learner's side, `ingest`, which writes
a chunk into the replay (one stream per actor env), exactly as a one-machine run's collector
records the same steps.

A chunk is plain data (numpy arrays and numbers; no pickled code): for each env of the actor,
in the order they happened, records of two kinds, `RESET` (a first frame: a new episode, or a
new learning segment after a lost life that the config makes terminal) and `ADD` (one agent
step: action, reward, learning terminal, truncation, and the frame that followed). Each frame
travels once, as the replay stores it once.

The Ray actor itself (agent/distributed.py) is this class behind `ray.remote`; tests drive it
directly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch

from agent.config import Config, from_dict
from agent.network import QNetwork

RESET, ADD = 0, 1


def _default_env(seed, config):
    from agent.train import default_env

    return default_env(seed, config)


class ActorCore:
    """Actor `index` of a run: `start(seed)` opens its envs, `collect(steps, ...)` acts
    epsilon-greedily for `steps` agent steps per env and returns a chunk (dict)."""

    def __init__(self, config: dict, index: int, epsilon: float,
                 make_env: Callable | None = None, threads: int = 1):
        self.config: Config = from_dict(config, source="the learner's config")
        self.index = int(index)
        self.epsilon = float(epsilon)
        self.make_env = make_env or _default_env
        self.envs: list = []
        self.rng = np.random.default_rng(0)
        self.network: QNetwork | None = None
        self.version = -1  # the learner update whose weights this actor acts with; -1: none
        self._records = Records(self.config.env.frame_shape)  # the next chunk's, being made
        self._scores: list[tuple[int, float, int]] = []
        torch.set_num_threads(max(1, int(threads)))

    def pid(self) -> int:
        return os.getpid()

    def start(self, seed: int) -> int:
        """(Re)open the envs from `seed` (env j: an independent stream of it) and begin an
        episode in each; their first frames go with the next chunk. Returns the pid."""
        self.close()
        c = self.config
        env_seed, explore_seed = np.random.SeedSequence(int(seed)).spawn(2)
        seeds = env_seed.generate_state(c.run.envs)
        self.envs = [self.make_env(int(s & 0x7FFFFFFF), c.env) for s in seeds]
        self.rng = np.random.default_rng(explore_seed)
        self.n_actions = len(self.envs[0].actions)
        if self.network is None:
            actions = self.envs[0].actions
            self.network = QNetwork(self.n_actions, c.env.stack, c.env.frame_shape,
                                    c.learner.dueling,
                                    actions.network_outputs(c.learner.shared_outputs)).eval()
        self._records.clear()
        for j, env in enumerate(self.envs):
            env.reset()
            self._records.add(RESET, j, 0, 0.0, False, False, env.observation[-1])
        return os.getpid()

    def set_weights(self, weights: dict) -> None:
        """Act with the learner's published weights {"version", "state": {name: array}}."""
        # (Ray hands over read-only views of its object store: copied, as torch wants.)
        state = {k: torch.from_numpy(np.array(v)) for k, v in weights["state"].items()}
        self.network.load_state_dict(state)
        self.version = int(weights["version"])

    @torch.no_grad()
    def _greedy(self) -> np.ndarray:
        obs = torch.from_numpy(np.stack([env.observation for env in self.envs]))
        return self.network(obs).argmax(dim=1).numpy()

    def collect(self, steps: int, weights: dict | None = None, epsilon: float | None = None,
                seed: int | None = None) -> dict:
        """Act `steps` agent steps in each env (epsilon-greedy: `epsilon` when given, e.g. 1.0
        before learning starts, else this actor's own) and return the chunk. `weights`: newer
        weights to act with from now on. `seed`: the seed to open the envs with if they are not
        open (a process that Ray restarted after a crash gets this call first): the chunk then
        says `started`, and begins with their first frames."""
        started = not self.envs
        if started:
            if seed is None:
                raise RuntimeError(f"actor {self.index}: collect() before start() without a seed")
            self.start(seed)
        t0 = time.perf_counter()
        if weights is not None:
            self.set_weights(weights)
        eps = self.epsilon if epsilon is None else float(epsilon)
        records = self._records
        records.reserve(int(steps) * len(self.envs) * 2)  # at most an ADD and a RESET a step
        scores, self._scores = self._scores, []
        for _ in range(int(steps)):
            explore = self.rng.random(len(self.envs)) < eps
            random = self.rng.integers(self.n_actions, size=len(self.envs))
            greedy = self._greedy() if not explore.all() and self.version >= 0 else None
            for j, env in enumerate(self.envs):
                if explore[j] or greedy is None:
                    action = int(random[j])
                else:
                    action = int(greedy[j])
                s = env.step(action)
                ended = s.terminated or s.truncated
                records.add(ADD, j, action, s.reward, s.learn_terminal,
                            s.truncated and not s.learn_terminal, env.observation[-1])
                if ended:
                    scores.append((j, float(env.episode_score), int(env.episode_steps)))
                    env.reset()
                    records.add(RESET, j, 0, 0.0, False, False, env.observation[-1])
                elif s.learn_terminal:  # a lost life: a new segment at this frame
                    records.add(RESET, j, 0, 0.0, False, False, env.observation[-1])
        chunk = {"actor": self.index, "version": self.version,
                 "steps": int(steps) * len(self.envs), "seconds": time.perf_counter() - t0,
                 **records.take(), "scores": scores, "started": started, "pid": os.getpid()}
        return chunk

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


class Records:
    """A chunk's records in growing arrays: each frame is copied once, from the env into its
    row (then Ray serializes the arrays as they are)."""

    FIELDS = (("op", np.uint8), ("env", np.int32), ("action", np.int64),
              ("reward", np.float32), ("terminal", bool), ("truncated", bool))

    def __init__(self, frame_shape, capacity: int = 64):
        self.frame_shape = tuple(frame_shape)
        self.n = 0
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        self.cols = {name: np.zeros(capacity, dtype) for name, dtype in self.FIELDS}
        self.frames = np.zeros((capacity, *self.frame_shape), np.uint8)

    def reserve(self, more: int) -> None:
        """Room for `more` records after those held (kept, in a larger array if needed)."""
        need = self.n + more
        if need <= len(self.frames):
            return
        cols, frames, n = self.cols, self.frames, self.n
        self._alloc(max(need, 2 * len(frames)))
        for name, col in cols.items():
            self.cols[name][:n] = col[:n]
        self.frames[:n] = frames[:n]

    def add(self, op, env, action, reward, terminal, truncated, frame) -> None:
        if self.n == len(self.frames):
            self.reserve(1)
        k = self.n
        c = self.cols
        c["op"][k], c["env"][k], c["action"][k] = op, env, action
        c["reward"][k], c["terminal"][k], c["truncated"][k] = reward, terminal, truncated
        self.frames[k] = frame
        self.n = k + 1

    def take(self) -> dict:
        """The records held, as a chunk's arrays (module docstring); then none are held. (The
        arrays handed out are not written again: the next records go into new ones.)"""
        n = self.n
        out = {name: col[:n] for name, col in self.cols.items()}
        out["frames"] = self.frames[:n]
        self._alloc(len(self.frames))
        self.n = 0
        return out

    def clear(self) -> None:
        self.n = 0


def ingest(replay, chunk: dict, first_stream: int) -> int:
    """Write `chunk` into `replay`: the actor's env j is stream first_stream + j. Returns the
    agent steps it held. A record the replay refuses (a NaN reward) raises ValueError naming the
    actor and env; the records before it are in the replay, as a collector's would be."""
    op, env, frames = chunk["op"], chunk["env"], chunk["frames"]
    action, reward = chunk["action"], chunk["reward"]
    terminal, truncated = chunk["terminal"], chunk["truncated"]
    for k in range(len(op)):
        stream = first_stream + int(env[k])
        if op[k] == RESET:
            replay.reset(frames[k], stream)
            continue
        try:
            replay.add(int(action[k]), float(reward[k]), bool(terminal[k]), bool(truncated[k]),
                       frames[k], stream)
        except ValueError as exc:
            raise ValueError(f"actor {chunk['actor']} env {int(env[k])}: the environment "
                             f"returned a transition that cannot be learned from ({exc}); "
                             f"training stopped, the checkpoints saved so far are intact"
                             ) from None
    return int(chunk["steps"])
