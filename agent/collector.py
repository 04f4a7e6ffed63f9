"""Experience collection: N environments -> the replay, one batched action per round.

One round: each env draws from its own exploration stream whether it explores (probability
epsilon) and, if it does, a uniform action; one forward pass of the online network over the
acting stacks of the others gives their greedy actions; every env steps; each env's new frame
goes straight from the native kernel into the next ring slot of its replay stream (stream i is
env i); the replay records the step; episode ends, life losses and scores are booked.

- N = 1: the env runs in this process and steps with `out=replay.frame_slot()`: no pool, no
  copy, exactly the single-env path.
- N > 1: a `VecEnv` (env 0 in this process and envs 1..N-1 in worker processes, or with
  `overlap` every env in a worker) over a replay ring in shared memory: env i writes its frame
  into the ring row the replay names for stream i (`FrameReplay.next_slots`). Env i is
  `make_env(seed + i)`, so it plays what a lone env of that seed would. The first frame of an
  episode that auto-reset goes into a scratch row of env i's beyond the replay's rows and is
  copied into the stream once the round is recorded (a copy per episode, not per step): so
  while the envs step, nothing the replay may sample is written, and the learner can sample
  and update meanwhile (`begin` ... `finish`).

A life loss that the config makes a learning terminal starts a new replay segment at the current
frame (a copy of one frame, once per lost life). After a resume without a replay snapshot every
stream starts a fresh segment at its env's current frame, and learning waits until the replay
again holds `learning_starts` transitions (`collected`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable

import numpy as np

from agent.checkpoint import to_numpy, to_torch
from agent.config import Config, EnvConfig
from agent.native import FrameReplay

EnvFactory = Callable[[int, EnvConfig], object]
"""make_env(seed, env_config) -> an env with AtariEnv's interface (actions, observation,
reset(out), step(action, out) -> Step, episode_score, episode_steps, get_state, set_state,
share_stack, close). With N > 1 envs it runs in worker processes too, so it must be picklable
(a module-level function)."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_envs(envs: int) -> int:
    """run.envs as a count: 0 ("auto") is one env per available core."""
    return envs if envs > 0 else available_cores()


def streams(config: Config) -> int:
    """Replay streams of a run (run.envs resolved): one per env, over all actors with Ray."""
    return config.run.envs * (config.ray.actors if config.ray.enabled else 1)


def check_streams(config: Config, envs: int) -> None:
    """Refuse a replay too small to give each of `envs` streams a full stack and n-step window."""
    need = config.env.stack + config.learner.n_step
    per = config.replay.capacity // envs
    if per <= need:
        raise ValueError(
            f"replay.capacity {config.replay.capacity:,} split over {envs} envs leaves {per:,} "
            f"slots per env, which must be more than env.stack + learner.n_step = {need}; use "
            f"--capacity {envs * (need + 1):,} or more, or fewer --envs")


def load_book(collector, state: dict, replay: dict | None) -> bool:
    """Restore a collector's counters and score book from its `state_dict()`, and its replay
    from a snapshot when there is one (else learning waits to refill it: collected 0). Returns
    whether the replay was restored."""
    collector.steps, collector.episodes = int(state["steps"]), int(state["episodes"])
    collector.scores = deque((float(s) for s in state["scores"]), maxlen=100)
    if replay is None:
        collector.collected = 0
        return False
    collector.replay.load_state_dict(replay)
    collector.collected = int(state["collected"])
    return True


class Collector:
    """The envs of one run, the replay they fill, their exploration streams and episode book.

    collector = Collector(config, envs, make_env, env_seed, replay_seed, explore_seed)
    collector.start(); n = collector.step(act, epsilon)  # n agent steps (one per env)
    """

    def __init__(self, config: Config, envs: int, make_env: EnvFactory, env_seed: int,
                 replay_seed: int, explore_seed: np.random.SeedSequence,
                 overlap: bool = False):
        self.config = c = config
        self.num_envs = n = int(envs)
        self.overlap = overlap and n > 1
        check_streams(c, n)
        self._vec = None
        self._ring = None
        frames = None
        if n > 1:
            from agent.shm import SharedArray
            from agent.workers import VecEnv

            h, w = c.env.frame_shape
            rows = c.replay.capacity // n * n
            # The replay's rows, then one scratch row per env for auto-reset first frames.
            self._ring = SharedArray((rows + n, h, w), np.uint8)
            frames = self._ring.array[:rows]
            self._scratch = self._ring.array[rows:]
        self.replay = FrameReplay(c.replay.capacity, c.env.frame_shape, c.env.stack,
                                  c.learner.n_step, c.learner.gamma, c.replay.prioritized,
                                  c.replay.alpha, seed=replay_seed, streams=n, frames=frames)
        if n == 1:
            self.env = make_env(env_seed, c.env)
            self.actions = self.env.actions
            # One env keeps the single stream it always had (and the checkpoints' layout).
            self.explore = [np.random.default_rng(explore_seed)]
        else:
            self._vec = VecEnv(c.env, n, seed=env_seed, make_env=make_env, ring=self._ring,
                               inline_first=not self.overlap)
            self.env = None
            self.actions = self._vec.actions
            self.explore = [np.random.default_rng(s) for s in explore_seed.spawn(n)]
        self.n_actions = len(self.actions)
        self._slots = np.zeros((n, 2), np.int64)
        if n > 1:
            self._slots[:, 1] = np.arange(rows, rows + n)  # the scratch rows
        self._actions: np.ndarray | None = None  # a round begun and not finished
        self.steps = 0
        """Agent steps taken, summed over the envs."""
        self.episodes = 0
        self.collected = 0
        """Transitions added to this replay since it began (learning waits for
        learner.learning_starts)."""
        self.scores: deque[float] = deque(maxlen=100)
        """Raw scores of the last 100 episodes, over all envs, in the order they ended."""
        self.open = False
        """Every env is inside an episode whose frames the replay holds (after start() or a
        restore)."""

    # ------------------------------------------------------------------ the envs
    @property
    def observations(self) -> np.ndarray:
        """The acting stacks, (N, stack, H, W) uint8, updated in place by every round."""
        if self._vec is not None:
            return self._vec.obs
        return self.env.observation[None]

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the env worker processes (empty with one env)."""
        return list(self._vec.pids) if self._vec is not None else []

    def start(self) -> None:
        """Reset every env into a new episode, each first frame straight into its stream."""
        if self._vec is None:
            self.env.reset(out=self.replay.frame_slot())
            self.replay.reset()
        else:
            self._vec.reset(self._next_rows())
            for i in range(self.num_envs):
                self.replay.reset(None, i)
        self.open = True

    def _next_rows(self) -> np.ndarray:
        """The ring rows that the envs' next frames go into (column 0 of the step slots)."""
        self._slots[:, 0] = self.replay.next_slots()[:, 0]
        return np.ascontiguousarray(self._slots[:, 0])

    def step(self, act: Callable[[np.ndarray], np.ndarray | int], epsilon: float) -> int:
        """One round: every env acts (epsilon-greedy, `act` the greedy policy: one stack ->
        an int with one env, N stacks -> N ints otherwise) and steps; returns the agent steps
        taken (N). A transition the replay refuses (a NaN reward) raises ValueError naming the
        step and env; nothing of it is stored."""
        if self._vec is not None:
            self.begin(act, epsilon)
            return self.finish()
        rng = self.explore[0]
        if rng.random() < epsilon:
            action = int(rng.integers(self.n_actions))
        else:
            action = act(self.env.observation)
        s = self.env.step(action, out=self.replay.frame_slot())
        self._record(0, action, s.reward, s.learn_terminal, s.truncated, s.terminated
                     or s.truncated, self.env.episode_score)
        if s.terminated or s.truncated:
            self.env.reset(out=self.replay.frame_slot())
            self.replay.reset()
        return 1

    def begin(self, act: Callable[[np.ndarray], np.ndarray], epsilon: float) -> None:
        """The first half of a round with several envs: choose the actions and send them. The
        envs step until `finish()`; meanwhile the replay may be sampled (nothing it can sample
        is being written) but not written."""
        actions = self._choose(act, epsilon)
        self._next_rows()
        self._vec.step_async(actions, self._slots)
        self._actions = actions

    def finish(self) -> int:
        """The second half: collect the envs' steps and record them in the replay; returns the
        agent steps taken (N)."""
        actions, self._actions = self._actions, None
        r = self._vec.step_wait()
        ended = r.terminated | r.truncated
        scores = {i: score for i, score, _ in r.episode_scores}
        for i in range(self.num_envs):
            self._record(i, int(actions[i]), float(r.reward[i]), bool(r.learn_terminal[i]),
                         bool(r.truncated[i]), bool(ended[i]), scores.get(i))
            if ended[i]:  # the auto-reset's first frame, from env i's scratch row
                self.replay.reset(self._scratch[i], i)
        return self.num_envs

    def _choose(self, act: Callable[[np.ndarray], np.ndarray], epsilon: float) -> np.ndarray:
        """Each env's action: its own stream decides to explore and draws the random action;
        one forward pass over all the stacks gives the greedy ones (skipped when all explore)."""
        n = self.num_envs
        actions = np.empty(n, np.int64)
        greedy = []
        for i, rng in enumerate(self.explore):
            if rng.random() < epsilon:
                actions[i] = rng.integers(self.n_actions)
            else:
                greedy.append(i)
        if greedy:
            best = act(self._vec.obs)
            actions[greedy] = best[greedy]
        return actions

    def _record(self, i: int, action: int, reward: float, learn_terminal: bool,
                truncated: bool, ended: bool, score: float | None) -> None:
        """Env i's step into its replay stream (its frame is already in the ring) and the book."""
        try:  # (positional: the frame is already in the ring; stream i)
            self.replay.add(action, reward, learn_terminal, truncated and not learn_terminal,
                            None, i)
        except ValueError as exc:  # e.g. a NaN reward: never let it into the replay
            env = f" (env {i})" if self.num_envs > 1 else ""
            raise ValueError(f"step {self.steps + 1:,}{env}: the environment returned a "
                             f"transition that cannot be learned from ({exc}); training "
                             f"stopped, the checkpoints saved so far are intact") from None
        self.steps += 1
        self.collected += 1
        if ended:
            self.scores.append(float(score))
            self.episodes += 1
        elif learn_terminal:  # a lost life ends a learning segment; the game goes on
            self.replay.reset(self.observations[i][-1], i)

    def attach(self, learner, reporter) -> None:
        """(RayCollector's actors need the learner; the envs here get the actions instead.)"""

    def epsilon(self) -> float:
        """The exploration rate of the next round (explore's schedule at these steps)."""
        c = self.config
        return c.explore.epsilon(self.steps, c.learner.learning_starts)

    def stats(self) -> dict:
        """Extra keys for the metrics rows (none here; RayCollector's per-actor ones)."""
        return {}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """What a resume needs besides the replay: every env's emulator state, every
        exploration stream, the counters and the score book (plain data and tensors)."""
        states = [self.env.get_state()] if self._vec is None else self._vec.get_states()
        return {"envs": self.num_envs, "env": [to_torch(s) for s in states],
                "explore": [rng.bit_generator.state for rng in self.explore],
                "steps": self.steps, "episodes": self.episodes, "collected": self.collected,
                "scores": list(self.scores)}

    def load_state_dict(self, state: dict, replay: dict | None) -> None:
        """Restore `state_dict()` (and the replay snapshot when there is one); without a
        snapshot each stream starts a fresh segment at its env's current frame."""
        envs = state["env"]
        if isinstance(envs, dict):  # a checkpoint from before N envs: one env
            envs = [envs]
        if len(envs) != self.num_envs:
            raise ValueError(f"the checkpoint holds {len(envs)} env(s), this run has "
                             f"{self.num_envs}")
        envs = [to_numpy(s) for s in envs]
        if self._vec is None:
            self.env.set_state(envs[0])
        else:
            self._vec.set_states(envs)
        for rng, s in zip(self.explore, state["explore"], strict=True):
            rng.bit_generator.state = s
        if not load_book(self, state, replay):
            for i in range(self.num_envs):
                self.replay.reset(self.observations[i][-1], i)
        self.open = True

    def close(self) -> None:
        """Stop the env workers (if any); idempotent. The shared ring stays mapped while the
        replay uses it (it goes with the last reference)."""
        if self._vec is not None:
            self._vec.close()
        if self.env is not None:
            self.env.close()
