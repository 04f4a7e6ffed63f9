"""Ape-X-style acting on Ray: N actor processes fill this learner's replay.

`RayCollector` is the collector of a run with `ray.address` set (agent/collector.py is the
one-machine one; the trainer drives either the same way). It connects to Ray (or starts a local
instance, shut down with the run), starts `ray.actors` actors (agent/actors.py: each steps
run.envs envs with a CPU copy of the online network and its own epsilon from the Ape-X ladder),
and keeps one request in flight per actor: "act `ray.chunk` steps per env and send what
happened". Each chunk goes into the replay, actor i's env j into stream i * envs + j, so the
replay stores each frame once, as on one machine; the trainer then makes the updates that the
new steps are due (learner.train_freq), so the replay ratio is the configured one whatever the
actors' speed: an actor whose chunk waits to be ingested waits too.

Weights: every `ray.sync_every` agent steps the learner's online weights (numpy arrays, tagged
with the learner's update count: versioned, no pickled code) go into Ray's object store once;
an actor that acts with older weights gets the reference with its next request.

Faults: an actor whose process dies (a crash, `kill -9`) is restarted by Ray (`max_restarts`);
one that sends nothing for `ray.actor_timeout` seconds is killed and restarted the same way.
The learner goes on with the others meanwhile. A request that failed (`actor_failed` event) is
sent again after a pause; the restarted process opens its envs with the seed that comes with
every request, begins new episodes in its streams (the replay keeps everything already in it),
and its first chunk says so (`actor_restart` event, with the new pid). Past `max_restarts`
failures in a row an actor is dropped (`actor_lost`); with none left the run fails, its
checkpoints intact.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from agent.actors import ActorCore, ingest
from agent.collector import available_cores, load_book
from agent.config import Config, to_dict
from agent.native import FrameReplay
from agent.workers import WorkerError

INSTALL = 'pip install -e ".[ray]" (or pip install "ray>=2.60,<3")'
RETRY_S = 1.0  # after an actor failed: time for Ray to see the death and begin the restart
START_S = 120.0  # at least this long for the first start (scheduling, imports, opening envs):
# ray.actor_timeout judges an actor that is acting, and may be set much shorter
OBJECT_STORE_BYTES = 512 * 2**20  # a local instance's store: chunks and weights are small


class RayUnavailable(ValueError):
    """Ray is missing, or its cluster cannot be reached: said in one line."""


def import_ray():
    try:
        import ray
        import ray.exceptions  # noqa: F401 - (RayCollector reads its error types)
    except ImportError:
        raise RayUnavailable(f"--ray needs Ray, which is not installed here: {INSTALL}") from None
    return ray


def connect(address: str, cpus: float):
    """Join the cluster at `address`, or start a local instance ("local") with `cpus` CPUs.
    Returns (ray, started): `started` when this call started the instance (the run shuts it
    down)."""
    ray = import_ray()
    if address not in ("local", "auto"):
        _check_reachable(address)
    if ray.is_initialized():  # (e.g. a test's own instance): used as it is, left running
        return ray, False
    try:
        if address == "local":
            # The actors import this package and a test's env factory: on this machine they
            # get this process's path. (On a cluster each machine has the package installed.)
            path = os.pathsep.join(p for p in sys.path if p)
            ray.init(num_cpus=max(available_cores(), math.ceil(cpus)), include_dashboard=False,
                     object_store_memory=OBJECT_STORE_BYTES,
                     runtime_env={"env_vars": {"PYTHONPATH": path}}, configure_logging=False,
                     log_to_driver=True)
            return ray, True
        ray.init(address=address, configure_logging=False)
        return ray, False
    except Exception as exc:  # ConnectionError, a timeout, a bad address inside Ray
        if ray.is_initialized():
            ray.shutdown()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayUnavailable(f"cannot connect to the Ray cluster at {address!r}: {first} "
                             f"(start one with `ray start --head`, or use --ray local)") from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse at once a HOST:PORT (or ray://HOST:PORT) where nothing listens: Ray itself keeps
    trying for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address!r}: "
                             f"{exc.strerror or exc} (start one with `ray start --head`, or use "
                             f"--ray local)") from None


@dataclass
class _Actor:
    """The learner's view of one actor."""

    handle: object  # the Ray actor
    pid: int | None = None
    alive: bool = True
    restarts: int = 0  # restarts seen (a chunk from a new process)
    failures: int = 0  # failed requests in a row
    sent_at: float = 0.0  # when its request in flight was sent
    version: int = -1  # the weights version it acts with (-1: none yet)
    sps: float = 0.0  # agent steps/s of its last chunk's acting


class RayCollector:
    """The actors of one run, the replay they fill, and the episode book (see the module
    docstring). Same interface as agent.collector.Collector for the trainer."""

    overlap = False  # the actors act while the learner updates: nothing to overlap here
    env = None

    def __init__(self, config: Config, make_env, env_seed: int, replay_seed: int):
        self.config = c = config
        r = c.ray
        # Connected first, so that a missing Ray or an unreachable cluster refuses the run
        # before anything is built or written in its directory.
        self.ray, self._started_ray = connect(r.address, r.actors * r.actor_cpus)
        self.per_actor = c.run.envs
        self.num_envs = r.actors * self.per_actor
        self.epsilons = r.epsilons()
        self.replay = FrameReplay(c.replay.capacity, c.env.frame_shape, c.env.stack,
                                  c.learner.n_step, c.learner.gamma, c.replay.prioritized,
                                  c.replay.alpha, seed=replay_seed, streams=self.num_envs)
        probe = make_env(env_seed, c.env)  # the action set, as the actors' envs have it
        self.actions = probe.actions
        probe.close()
        self.n_actions = len(self.actions)
        self.explore = [np.random.default_rng(env_seed)]  # (the trainer's explore_rng)
        self._seeds = np.random.SeedSequence(env_seed)
        self._make_env = make_env
        self.steps = self.episodes = self.collected = 0
        self.scores: deque[float] = deque(maxlen=100)
        self.open = False
        self.actors: list[_Actor] = []
        self._inflight: dict = {}  # object ref -> actor index
        self._retry_at: dict = {}  # actor index -> when to ask a failed actor again
        self._unavailable_since: dict = {}  # actor index -> first "unavailable" of a streak
        self._weights = None  # the newest published weights: (version, object ref)
        self._published_at = -10**18
        self.learner = None
        self.reporter = None
        self.ingest_seconds = 0.0  # spent writing chunks into the replay (scripts/bench_ray.py)

    def attach(self, learner, reporter) -> None:
        """The learner whose weights the actors get, and where events go."""
        self.learner, self.reporter = learner, reporter

    def epsilon(self) -> float:
        """The actors' mean epsilon (for the rows): 1 until learning starts, then the Ape-X
        ladder's."""
        if self.collected < self.config.learner.learning_starts:
            return 1.0
        return float(np.mean(self.epsilons))

    # ------------------------------------------------------------------ actors
    @property
    def worker_pids(self) -> list[int]:
        """The live actors' pids."""
        return [a.pid for a in self.actors if a.alive and a.pid]

    def start(self) -> None:
        """Start the actors (each opens its envs) and send each its first request."""
        c = self.config
        ray = self.ray
        remote = ray.remote(ActorCore).options(num_cpus=c.ray.actor_cpus,
                                               max_restarts=c.ray.max_restarts,
                                               max_task_retries=0)
        config = to_dict(c)
        n = c.ray.actors
        self.actors = [_Actor(remote.remote(config, i, self.epsilons[i], self._make_env))
                       for i in range(n)]
        self._publish(force=True)
        starts = [a.handle.start.remote(self._seed()) for a in self.actors]
        wait = max(START_S, c.ray.actor_timeout)
        try:
            for actor, pid in zip(self.actors, ray.get(starts, timeout=wait), strict=True):
                actor.pid = pid
        except Exception as exc:
            raise WorkerError(
                f"the Ray actors did not start within {wait:g} s (the longer of "
                f"{START_S:g} s and ray.actor_timeout) ({_first_line(exc)}): does the "
                f"cluster have {n} x ray.actor_cpus "
                f"{c.ray.actor_cpus:g} CPUs free (`ray status`)?", -1, None) from None
        for i in range(n):
            self._request(i)
        self.open = True

    def _seed(self) -> int:
        return int(self._seeds.spawn(1)[0].generate_state(1)[0] & 0x7FFFFFFF)

    def _publish(self, force: bool = False) -> None:
        """Put the online weights in the object store if `ray.sync_every` steps have passed."""
        if self.learner is None:
            return
        if not force and self.steps - self._published_at < self.config.ray.sync_every:
            return
        version = self.learner.updates
        if self._weights is not None and self._weights[0] == version:
            self._published_at = self.steps
            return
        state = {k: v.detach().float().cpu().contiguous().numpy()
                 for k, v in self.learner.online.state_dict().items()}
        self._weights = (version, self.ray.put({"version": version, "state": state}))
        self._published_at = self.steps

    def _request(self, i: int) -> None:
        c = self.config
        actor = self.actors[i]
        weights = None
        if self._weights is not None and actor.version != self._weights[0]:
            weights = self._weights[1]
            actor.version = self._weights[0]
        eps = 1.0 if self.collected < c.learner.learning_starts else None
        # The seed is used only by an actor whose envs are not open: one that Ray restarted.
        ref = actor.handle.collect.remote(c.ray.chunk, weights, eps, self._seed())
        self._inflight[ref] = i
        actor.sent_at = time.monotonic()

    def step(self, act=None, epsilon: float | None = None) -> int:
        """Ingest the next chunk any actor sends (waiting for one); returns its agent steps (0
        when the wait ended with an actor's failure instead)."""
        ray = self.ray
        while True:
            self._retry_due()
            if not self._inflight and self._retry_at:  # only retries pending: wait for them
                time.sleep(max(0.0, min(self._retry_at.values()) - time.monotonic()))
                continue
            if not self._inflight:
                raise WorkerError(f"every Ray actor failed (more than ray.max_restarts "
                                  f"{self.config.ray.max_restarts} times in a row each); the "
                                  f"checkpoints saved so far are intact", -1, None)
            self._publish()
            self._kill_hung()
            ready, _ = ray.wait(list(self._inflight), num_returns=1, timeout=1.0)
            if ready:
                break
        ref = ready[0]
        i = self._inflight.pop(ref)
        actor = self.actors[i]
        try:
            chunk = ray.get(ref)
        except Exception as exc:  # the actor died (RayActorError) or its call raised
            self._failed(i, exc)
            return 0
        actor.failures = 0
        self._unavailable_since.pop(i, None)
        if chunk["started"]:  # a new process: Ray restarted the actor
            actor.restarts += 1
            self._event("actor_restart", f"actor {i} restarted by Ray (pid {actor.pid} -> "
                        f"{chunk['pid']}); its envs began new episodes, the replay keeps what "
                        f"it had", actor=i, restarts=actor.restarts, pid=chunk["pid"])
            actor.pid = chunk["pid"]
        actor.version = chunk["version"]  # (-1 in a new process: it gets the weights)
        t0 = time.perf_counter()
        n = ingest(self.replay, chunk, i * self.per_actor)
        self.ingest_seconds += time.perf_counter() - t0
        for _, score, _ in chunk["scores"]:
            self.scores.append(float(score))
            self.episodes += 1
        self.steps += n
        self.collected += n
        if chunk["seconds"] > 0:
            actor.sps = n / chunk["seconds"]
        self._request(i)
        return n

    def _kill_hung(self) -> None:
        """Kill, for Ray to restart, each actor whose request has been running for more than
        ray.actor_timeout: checked whatever the other actors do (a healthy one keeps the
        learner busy). A request whose chunk is ready but not yet read is not hung."""
        timeout = self.config.ray.actor_timeout
        now = time.monotonic()
        overdue = [ref for ref, i in self._inflight.items()
                   if now - self.actors[i].sent_at > timeout]
        if not overdue:
            return
        done, _ = self.ray.wait(overdue, num_returns=len(overdue), timeout=0)
        for ref in set(overdue) - set(done):
            i = self._inflight[ref]
            actor = self.actors[i]
            self._event("actor_hung", f"actor {i} (pid {actor.pid}) sent nothing for "
                        f"{timeout:g} s: killing it for Ray to restart", actor=i)
            self.ray.kill(actor.handle, no_restart=False)
            actor.sent_at = now  # its request fails; the retry runs in the new process

    def _failed(self, i: int, exc: BaseException) -> None:
        """Actor i's request failed: its process died (Ray restarts it, up to ray.max_restarts)
        or the call raised. Ask again after a pause that doubles with each failure in a row;
        past max_restarts failures in a row the actor is dropped."""
        c = self.config.ray
        actor = self.actors[i]
        why = _first_line(exc)
        now = time.monotonic()
        if isinstance(exc, self.ray.exceptions.ActorUnavailableError):
            # Ray is restarting it (a new process starts, imports torch, opens its envs): ask
            # again every RETRY_S without counting, for up to ray.actor_timeout.
            since = self._unavailable_since.setdefault(i, now)
            if now - since < c.actor_timeout:
                if since == now:
                    self._event("actor_failed", f"actor {i} (pid {actor.pid}) is "
                                f"unavailable ({why}); asking again while Ray restarts it",
                                actor=i, failures=actor.failures)
                self._retry_at[i] = now + RETRY_S
                return
            del self._unavailable_since[i]
        actor.failures += 1
        if actor.failures > c.max_restarts:
            actor.alive = False
            self._event("actor_lost", f"actor {i} (pid {actor.pid}) failed {actor.failures} "
                        f"times in a row ({why}): past ray.max_restarts {c.max_restarts}, the "
                        f"run goes on without it", actor=i)
            return
        pause = RETRY_S * 2 ** (actor.failures - 1)
        self._event("actor_failed", f"actor {i} (pid {actor.pid}) failed ({why}); asking "
                    f"again in {pause:g} s", actor=i, failures=actor.failures)
        self._retry_at[i] = time.monotonic() + pause

    def _retry_due(self) -> None:
        now = time.monotonic()
        for i, at in list(self._retry_at.items()):
            if at <= now:
                del self._retry_at[i]
                self._request(i)

    def _event(self, kind: str, message: str, **fields) -> None:
        if self.reporter is not None:
            self.reporter.event(kind, f"step {self.steps:,}: {message}", steps=self.steps,
                                **fields)

    def stats(self) -> dict:
        """For the rows: per-actor agent steps/s (of their last chunk's acting time) and the
        age, in learner updates, of the weights each acts with (None: not yet given any, or
        the actor is lost)."""
        updates = self.learner.updates if self.learner is not None else 0
        return {"actor_sps": [round(a.sps, 1) if a.alive else None for a in self.actors],
                "weights_age": [updates - a.version if a.version >= 0 and a.alive else None
                                for a in self.actors]}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """What a resume needs besides the replay: the counters and the score book. The
        actors' emulators are not saved: after a resume they begin new episodes."""
        return {"envs": self.num_envs, "env": [{} for _ in range(self.num_envs)],
                "explore": [self.explore[0].bit_generator.state], "steps": self.steps,
                "episodes": self.episodes, "collected": self.collected,
                "scores": list(self.scores)}

    def load_state_dict(self, state: dict, replay: dict | None) -> None:
        envs = state["env"]
        n = len(envs) if isinstance(envs, list) else 1
        if n != self.num_envs:
            raise ValueError(f"the checkpoint holds {n} env(s), this run has {self.num_envs}")
        load_book(self, state, replay)
        # open stays False: start() connects and the actors' first records begin new episodes

    def close(self) -> None:
        """Stop the actors, and the Ray instance if this run started it; idempotent."""
        ray, self.ray = self.ray, None
        if ray is None:
            return
        for actor in self.actors:
            try:
                ray.kill(actor.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors, self._inflight = [], {}
        if self._started_ray:
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
