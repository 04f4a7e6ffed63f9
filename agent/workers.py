"""N environments stepped in worker processes, observations and step results in shared memory.

ale-py's binding holds the GIL while it emulates, so threads do not run games in parallel; this
module runs one `AtariEnv` per worker process. Env ``i`` is ``AtariEnv(config, seed=seed + i)``,
so worker ``i`` plays exactly the trajectory a serial ``AtariEnv`` with that seed plays.

Data path. One shared block (a `multiprocessing` RawArray: an unlinked file in /dev/shm that the
workers map) holds, as numpy views:

- ``obs``          (N, stack, H, W) uint8: each env's acting stack, oldest frame first;
- ``frames``       (N, H, W) uint8: each env's newest frame (what a replay ring stores);
- ``final_frames`` (N, H, W) uint8: the last frame of an episode that ended on this step;
- the per-step scalars: rewards (float32), flags (bool), and the score and length of an
  episode that ended (float64, int64).

Per step the parent sends each worker one small fixed-size message (command byte + action) and
receives a one-byte ack ("k", or "d" when the episode ended); no array is pickled. Every worker
is sent its action before any answer is read, so the N envs step at the same time; `step()` is
`step_async()` (send) then `step_wait()` (collect), and a caller may do other work between the
two (a learner's update) while the envs step. A worker steps its env with ``out=frames[i]``
(the native kernel writes the new frame straight into shared memory), fills its scalars, and
when the episode ended (terminated or truncated) copies that last frame into
``final_frames[i]``, records the score, and resets its env (auto-reset): ``obs[i]`` and
``frames[i]`` then hold the new episode's first observation. It copies its env's stack into
``obs[i]`` and acks. The pipe's system calls order the shared writes before the ack, on any
CPU. The shared block is an unlinked file (in /dev/shm on Linux), so nothing is left
behind whatever way the processes end, and the views stay valid (holding the last values) after
`close()`.

Waiting. On a virtual machine, waking a process whose vCPU went idle costs tens of microseconds,
a large part of a ~250 us agent step. So a worker that has acked polls its pipe for the next
command for up to ``spin`` seconds (default 1 ms), yielding the CPU (sched_yield) between polls
so that any other runnable task (the learner's threads) goes first, before it sleeps in a
blocking read; the parent, once some workers have answered, polls the same way for the rest.
``spin=0`` turns this off: every wait then sleeps in the kernel at once.

Processes. The start method defaults to "forkserver" on Linux (forking a process that already
runs torch's threads is unsafe; "spawn" is slower to start), else "spawn"; the worker entry is
the module-level `_worker_main`. Workers are daemonic and ignore SIGINT, so Ctrl-C reaches only
the parent: a KeyboardInterrupt that lands inside `reset()` or `step()` closes the pool before it
propagates. A worker whose parent dies reads EOF on its pipe and exits (with "fork", each worker
first closes the other workers' pipe ends it inherited, so that EOF does come). As with any
forkserver or spawn pool, a script must create the VecEnv under ``if __name__ == "__main__":``.

Failures. Answers are awaited with ``select.poll`` on the pipes and the process sentinels, never
without a deadline: a worker that died (its exit code is reported, with the signal's name), that
closed its pipe, or that did not answer within ``timeout`` seconds raises a `WorkerError` naming
its index and pid. An exception inside a worker's env is sent back with its traceback and raised
as a `WorkerError` (a `WorkerValueError`, also a ValueError, when the env raised ValueError,
e.g. for a bad action). After any of these the pool closes itself and stays closed: there is no
worker restart, the run stops cleanly. Closing asks every worker to stop, joins them (about
2 s), then terminates, continues (a stopped process cannot act on SIGTERM) and finally kills the
stragglers through their Process handles: signals go only to the pids this pool started. A
worker already known to be dead or hung is killed at once. Actions are validated in the parent
(shape (N,), integer dtype, within range) and a bad one raises ValueError before anything is
sent, leaving the pool usable.

Cleanup is a `weakref.finalize` holding only the processes and pipes (not the VecEnv), so an
unclosed VecEnv is closed when it is garbage collected or at interpreter exit; it is the only
thing registered outside the object. A VecEnv is not thread-safe: drive it from one thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import pickle
import select
import signal
import struct
import sys
import time
import traceback
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent.config import EnvConfig
from agent.games import ActionSet

__all__ = ["VecEnv", "VecStep", "WorkerError", "WorkerValueError", "default_start_method"]

# Parent -> worker: one fixed-size message, the command and (for a step) the action index.
_CMD = struct.Struct("<Bq")
_STEP, _RESET, _STOP = 1, 2, 3
_STOP_MSG = _CMD.pack(_STOP, 0)
_RESET_MSG = _CMD.pack(_RESET, 0)
# Worker -> parent: the first byte says what follows.
_OK = b"k"  # done; the results are in shared memory
_ENDED = b"d"  # done, and the episode ended (final frame and score in shared memory)
_READY = b"r"  # started: a pickled ActionSet follows
_ERROR = b"e"  # an exception: its formatted traceback follows (utf-8)
_VALUE_ERROR = b"v"  # a ValueError: its message, then its traceback

_ALIGN = 64
_CLOSE_JOIN_S = 2.0
_sched_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
"""Give the CPU to any other runnable task, if there is one (used while polling)."""


class WorkerError(RuntimeError):
    """A worker died, hung or failed. Names the worker's index and pid; the pool is closed."""

    def __init__(self, message: str, index: int, pid: int | None, exitcode: int | None = None):
        super().__init__(message)
        self.index = index
        self.pid = pid
        self.exitcode = exitcode


class WorkerValueError(WorkerError, ValueError):
    """A worker's env raised ValueError (e.g. an action out of range); the pool is closed."""


@dataclass
class VecStep:
    """What one vector step produced; each array has shape (num_envs,), row i is env i."""

    reward: np.ndarray
    """float32: the reward to learn from (clipped if the config says so)."""
    raw_reward: np.ndarray
    """float32: the game's score change."""
    terminated: np.ndarray
    """bool: the game is over (the env was reset: obs[i] starts a new episode)."""
    truncated: np.ndarray
    """bool: the episode hit max_frames (the env was reset too)."""
    life_lost: np.ndarray
    """bool: a life was lost on this step and the game is not over."""
    learn_terminal: np.ndarray
    """bool: terminated, or life_lost when the config makes life loss a terminal."""
    episode_scores: list[tuple[int, float, int]]
    """(env index, raw episode score, agent steps) of each episode that ended on this step."""

    @property
    def ended(self) -> np.ndarray:
        """bool: terminated or truncated (final_frames[i] holds that episode's last frame)."""
        return self.terminated | self.truncated


def default_start_method() -> str:
    """"forkserver" where it exists on Linux (safe once torch threads run), else "spawn"."""
    if sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods():
        return "forkserver"
    return "spawn"


# ------------------------------------------------------------------------------ shared layout
def _layout(n: int, stack: int, h: int, w: int) -> tuple[dict, int]:
    """{name: (offset, dtype, shape)} for every shared array, and the block's size in bytes."""
    fields = [
        ("obs", np.uint8, (n, stack, h, w)),
        ("frames", np.uint8, (n, h, w)),
        ("final_frames", np.uint8, (n, h, w)),
        ("rewards", np.float32, (2, n)),  # reward, raw_reward
        ("flags", np.bool_, (4, n)),  # terminated, truncated, life_lost, learn_terminal
        ("episode_score", np.float64, (n,)),
        ("episode_steps", np.int64, (n,)),
    ]
    layout, offset = {}, 0
    for name, dtype, shape in fields:
        layout[name] = (offset, dtype, shape)
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        offset += -(-size // _ALIGN) * _ALIGN
    return layout, offset


def _views(block, layout: dict) -> dict[str, np.ndarray]:
    buf = np.frombuffer(block, dtype=np.uint8)
    views = {}
    for name, (offset, dtype, shape) in layout.items():
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        views[name] = buf[offset:offset + size].view(dtype).reshape(shape)
    return views


# ------------------------------------------------------------------------------ the worker
def _worker_main(index: int, config: EnvConfig, seed: int, block, layout: dict, conn,
                 spin: float = 0.0, inherited: Sequence = ()) -> None:
    """One worker: an AtariEnv driven over `conn`, its results written into the shared block."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for other in inherited:  # "fork" only: pipe ends of the parent that this copy must not keep
        other.close()
    env = None
    try:
        from agent.env import AtariEnv

        env = AtariEnv(config, seed)
        views = _views(block, layout)
        conn.send_bytes(_READY + pickle.dumps(env.actions))
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send_bytes(_ERROR + traceback.format_exc().encode())
        return
    obs_i = views["obs"][index]
    frame_i = views["frames"][index]
    final_i = views["final_frames"][index]
    rewards, flags = views["rewards"], views["flags"]
    scores, lengths = views["episode_score"], views["episode_steps"]
    recv, send, unpack = conn.recv_bytes, conn.send_bytes, _CMD.unpack
    env_step, env_reset, stack = env.step, env.reset, env.observation
    ready, clock, yield_cpu = _readiness(conn), time.perf_counter, _sched_yield
    try:
        while True:
            if spin > 0.0 and not ready():
                # Poll for the next command a short while (yielding the CPU to any other
                # runnable task) before sleeping in recv: a vCPU woken from idle costs tens
                # of microseconds per step on a virtual machine.
                end = clock() + spin
                while clock() < end:
                    yield_cpu()
                    if ready():
                        break
            try:
                cmd, action = unpack(recv())
            except EOFError:  # the parent is gone
                return
            reply = _OK
            try:
                if cmd == _STEP:
                    s = env_step(action, out=frame_i)
                    rewards[0, index] = s.reward
                    rewards[1, index] = s.raw_reward
                    flags[0, index] = s.terminated
                    flags[1, index] = s.truncated
                    flags[2, index] = s.life_lost
                    flags[3, index] = s.learn_terminal
                    if s.terminated or s.truncated:
                        final_i[...] = frame_i
                        scores[index] = env.episode_score
                        lengths[index] = env.episode_steps
                        env_reset(out=frame_i)
                        reply = _ENDED
                    obs_i[...] = stack
                elif cmd == _RESET:
                    env_reset(out=frame_i)
                    obs_i[...] = stack
                elif cmd == _STOP:
                    return
                else:
                    raise RuntimeError(f"unknown command {cmd}")
            except ValueError as exc:
                reply = _VALUE_ERROR + f"{exc}\n{traceback.format_exc()}".encode()
            except Exception:
                reply = _ERROR + traceback.format_exc().encode()
            send(reply)
    except (BrokenPipeError, ConnectionResetError):  # the parent is gone
        return
    finally:
        env.close()


def _readiness(conn):
    """A no-wait "is a message waiting on `conn`?" (one poll(2) call where poll exists)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        poll = poller.poll
        return lambda: bool(poll(0))
    return lambda: conn.poll(0)  # pragma: no cover - not Linux


# ------------------------------------------------------------------------------ shutdown
def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit code unknown"
    if exitcode < 0:
        try:
            return f"exit code {exitcode} ({signal.Signals(-exitcode).name})"
        except ValueError:
            return f"exit code {exitcode}"
    return f"exit code {exitcode}"


def _signal_stopped(proc) -> None:
    """SIGCONT one of our own workers (by its pid) so that a pending SIGTERM can act."""
    if proc.exitcode is None and proc.pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGCONT)


def _shutdown(procs: list, conns: list, join_timeout: float, doomed: set) -> None:
    """Stop, join, terminate, kill: every worker this pool started ends here; idempotent."""
    for i, proc in enumerate(procs):  # known dead or hung: no point asking
        if i in doomed and proc.exitcode is None:
            with contextlib.suppress(Exception):
                proc.kill()
    for conn in conns:
        with contextlib.suppress(Exception):
            conn.send_bytes(_STOP_MSG)
    deadline = time.monotonic() + join_timeout
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(max(0.0, deadline - time.monotonic()))
    stragglers = [p for p in procs if p.exitcode is None]
    for proc in stragglers:
        with contextlib.suppress(Exception):
            proc.terminate()
            _signal_stopped(proc)
    for proc in stragglers:
        with contextlib.suppress(Exception):
            proc.join(0.5)
            if proc.exitcode is None:
                proc.kill()
                proc.join(2.0)
    for conn in conns:
        with contextlib.suppress(Exception):
            conn.close()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.close()  # releases the sentinel; refused (ValueError) if it still runs


class _Poller:
    """Wait on many fds with a deadline: select.poll where it exists, else connection.wait."""

    def __init__(self, objects: dict[int, object]):
        self._objects = objects  # fd -> the object to report (a Connection or a sentinel key)
        if hasattr(select, "poll"):
            self._poll = select.poll()
            for fd in objects:
                self._poll.register(fd, select.POLLIN)
        else:  # pragma: no cover - not Linux
            self._poll = None

    def wait(self, timeout: float) -> list[int]:
        """The fds that are ready (readable, hung up or in error) within `timeout` seconds."""
        if self._poll is not None:
            ms = 0 if timeout <= 0 else int(timeout * 1000) + 1
            return [fd for fd, _ in self._poll.poll(ms)]
        ready = multiprocessing.connection.wait(list(self._objects), timeout)  # pragma: no cover
        return [r if isinstance(r, int) else r.fileno() for r in ready]  # pragma: no cover


# ------------------------------------------------------------------------------ the pool
class VecEnv:
    """`num_envs` AtariEnvs in worker processes; env i is ``AtariEnv(config, seed + i)``.

    ``obs``, ``frames`` and ``final_frames`` are views on shared memory, overwritten in place by
    every `reset()` and `step()`: copy what must outlive the next call.
    """

    def __init__(self, config: EnvConfig | None = None, num_envs: int = 1, seed: int = 0,
                 timeout: float = 10.0, start_method: str | None = None,
                 start_timeout: float = 60.0, spin: float = 0.001):
        """Start `num_envs` workers and wait until each has loaded its game.

        timeout: seconds a reset or step may take before the pool gives up on a worker.
        start_method: "forkserver", "spawn" or "fork"; None picks `default_start_method()`.
            With forkserver or spawn a script must start the pool under
            ``if __name__ == "__main__":`` (the workers import the main module).
        start_timeout: seconds each worker may take to import and load its ROM.
        spin: seconds a waiting side polls (yielding the CPU) before it sleeps; 0 never polls.
        """
        self.config = (config or EnvConfig()).validate()
        for name, value in (("num_envs", num_envs), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if not 1 <= num_envs <= 1024:
            raise ValueError(f"num_envs must be an int in [1, 1024], got {num_envs!r}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        for name, value in (("timeout", timeout), ("start_timeout", start_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(spin, bool) or not isinstance(spin, (int, float)) or not 0 <= spin <= 1:
            raise ValueError(f"spin must be a number of seconds in [0, 1], got {spin!r}")
        methods = multiprocessing.get_all_start_methods()
        self.start_method = start_method or default_start_method()
        if self.start_method not in methods:
            raise ValueError(f"start_method must be one of {', '.join(map(repr, methods))} "
                             f"or None, got {start_method!r}")
        self.num_envs = int(num_envs)
        self.seed = int(seed)
        self.timeout = float(timeout)
        self.spin = float(spin)
        self._closed = False
        self._close_reason: str | None = None
        self._started = False  # reset() was called: step() is allowed
        self._pending = False  # step_async() sent actions that step_wait() has not collected
        self._procs: list = []
        self._conns: list = []
        self._doomed: set[int] = set()
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns,
                                           _CLOSE_JOIN_S, self._doomed)

        n, stack, (h, w) = self.num_envs, self.config.stack, self.config.frame_shape
        layout, size = _layout(n, stack, h, w)
        ctx = multiprocessing.get_context(self.start_method)
        self._block = ctx.RawArray(ctypes.c_uint8, size)
        views = _views(self._block, layout)
        self.obs: np.ndarray = views["obs"]
        self.frames: np.ndarray = views["frames"]
        self.final_frames: np.ndarray = views["final_frames"]
        self._rewards = views["rewards"]
        self._flags = views["flags"]
        self._scores = views["episode_score"]
        self._lengths = views["episode_steps"]
        self.actions: ActionSet | None = None
        try:
            for i in range(n):
                parent_end, child_end = ctx.Pipe(duplex=True)
                self._conns.append(parent_end)
                # With "fork" the child inherits every parent end made so far; it closes them,
                # so a worker sees EOF as soon as the parent process itself is gone.
                inherited = tuple(self._conns) if self.start_method == "fork" else ()
                proc = ctx.Process(
                    target=_worker_main, name=f"agent-env-worker-{i}", daemon=True,
                    args=(i, self.config, self.seed + i, self._block, layout, child_end,
                          self.spin, inherited),
                )
                self._procs.append(proc)
                proc.start()
                child_end.close()
            self.pids: list[int] = [p.pid for p in self._procs]
            self._sentinels = {p.sentinel: i for i, p in enumerate(self._procs)}
            self._conn_fds = {c.fileno(): i for i, c in enumerate(self._conns)}
            self._poller = _Poller({**self._conn_fds, **self._sentinels})
            replies = self._collect("start", float(start_timeout))
            actions = [pickle.loads(r[1:]) for r in replies]
            if any(a != actions[0] for a in actions):  # pragma: no cover - same config
                raise RuntimeError(f"workers disagree on the action set: {actions}")
            self.actions = actions[0]
            self._n_actions = len(self.actions)
            self._step_msgs = [_CMD.pack(_STEP, a) for a in range(self._n_actions)]
        except BaseException:
            self._close_now("start failed")
            raise

    # ------------------------------------------------------------------ public face
    def reset(self) -> np.ndarray:
        """Reset every env; returns `self.obs` (N, stack, H, W), also updated in place."""
        self._check_open()
        if self._pending:
            raise RuntimeError("step_async() is waiting for its step_wait(); call it first")
        try:
            for i, conn in enumerate(self._conns):
                self._send(i, conn, _RESET_MSG, "reset")
            self._collect("reset", self.timeout)
        except BaseException:
            self._close_now("reset failed")
            raise
        self._started = True
        return self.obs

    def step(self, actions) -> VecStep:
        """Step env i with actions[i] (N ints); finished episodes are reset automatically."""
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions) -> None:
        """Send the actions and return at once: the envs step while the caller works on.

        `step_wait()` collects the results; until then obs, frames and final_frames are being
        written by the workers and must not be read.
        """
        self._check_open()
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if self._pending:
            raise RuntimeError("step_async() was already called; call step_wait() first")
        acts = self._check_actions(actions)
        try:
            self._send_step(acts)
        except BaseException:
            self._close_now("step failed")
            raise
        self._pending = True

    def step_wait(self) -> VecStep:
        """The results of the step that `step_async()` started (within `timeout` seconds)."""
        self._check_open()
        if not self._pending:
            raise RuntimeError("step_wait() without a step_async() before it")
        self._pending = False
        try:
            return self._collect_step()
        except BaseException:
            self._close_now("step failed")
            raise

    def close(self) -> None:
        """Stop the workers and release them; idempotent. obs/frames keep their last values."""
        self._close_now("close() was called")

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_envs

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pids {getattr(self, 'pids', [])}"
        return (f"VecEnv({self.config.game!r}, num_envs={self.num_envs}, seed={self.seed}, "
                f"{self.start_method}, {state})")

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this VecEnv is closed ({self._close_reason}); make a new one")

    def _check_actions(self, actions) -> list[int]:
        """`actions` as a list of N ints in range, else a ValueError that names the bad one."""
        n, k = self.num_envs, self._n_actions
        if type(actions) is np.ndarray and actions.dtype.kind in "iu" and actions.shape == (n,):
            acts = actions.tolist()
        elif (type(actions) in (list, tuple) and len(actions) == n
              and all(type(a) is int for a in actions)):
            acts = list(actions)
        else:  # anything else (np.int64 items, tensors, bools, floats): through numpy, checked
            try:
                array = np.asarray(actions)
            except Exception as exc:
                raise ValueError(f"actions must be a sequence of {n} ints, got "
                                 f"{actions!r}") from exc
            if array.shape != (n,):
                raise ValueError(f"actions must have shape ({n},): one action per env, got "
                                 f"shape {array.shape}: {actions!r}")
            if array.dtype.kind not in "iu":
                raise ValueError(f"actions must be ints in [0, {k - 1}], got dtype "
                                 f"{array.dtype}: {actions!r}")
            acts = array.tolist()
        for i, a in enumerate(acts):
            if not 0 <= a < k:
                raise ValueError(f"actions[{i}] = {a} is out of range: {self.config.game}'s "
                                 f"{self.actions.kind} action set accepts ints in [0, {k - 1}]")
        return acts

    def _step(self, acts) -> VecStep:
        """One step with `acts` not checked (tests use it to reach the env's own check)."""
        self._send_step(acts)
        return self._collect_step()

    def _send_step(self, acts) -> None:
        msgs = self._step_msgs
        for i, (conn, a) in enumerate(zip(self._conns, acts)):
            a = int(a)
            self._send(i, conn, msgs[a] if 0 <= a < len(msgs) else _CMD.pack(_STEP, a), "step")

    def _collect_step(self) -> VecStep:
        replies = self._collect("step", self.timeout)
        rewards = self._rewards.copy()
        flags = self._flags.copy()
        scores = []
        if _ENDED in replies:
            scores = [(i, float(self._scores[i]), int(self._lengths[i]))
                      for i, r in enumerate(replies) if r == _ENDED]
        return VecStep(rewards[0], rewards[1], flags[0], flags[1], flags[2], flags[3], scores)

    def _send(self, i: int, conn, message: bytes, what: str) -> None:
        try:
            conn.send_bytes(message)
        except OSError:  # EPIPE, ECONNRESET: the worker is gone
            raise self._fail(i, f"closed its pipe before {what}", died=True) from None

    def _collect(self, what: str, timeout: float) -> list[bytes]:
        """One answer from every worker within `timeout` seconds, else a WorkerError."""
        n = self.num_envs
        replies: list[bytes | None] = [None] * n
        pending = n
        deadline = time.monotonic() + timeout
        conn_fds, sentinels, conns = self._conn_fds, self._sentinels, self._conns
        wait, spin = self._poller.wait, self.spin
        while pending:
            ready = wait(0.0) if pending < n and spin > 0.0 else None
            if ready == []:  # some answered: the rest are close, poll a while before sleeping
                end = time.perf_counter() + spin
                while not ready and time.perf_counter() < end:
                    _sched_yield()
                    ready = wait(0.0)
            if not ready:
                ready = wait(deadline - time.monotonic())
            if not ready:
                if time.monotonic() < deadline:
                    continue
                i = next(j for j in range(n) if replies[j] is None)
                raise self._fail(i, f"did not answer within {timeout:g} s during {what} "
                                    f"(hung, stopped or too slow; see VecEnv's timeout)",
                                 died=False)
            died = []
            for fd in ready:
                i = conn_fds.get(fd)
                if i is None:
                    died.append(sentinels[fd])
                    continue
                if replies[i] is not None:  # pragma: no cover - one answer per command
                    continue
                try:
                    reply = conns[i].recv_bytes()
                except (EOFError, OSError):
                    raise self._fail(i, f"closed its pipe during {what}", died=True) from None
                tag = reply[:1]
                if tag == _OK or tag == _ENDED or tag == _READY:
                    replies[i] = reply
                    pending -= 1
                elif tag == _VALUE_ERROR:
                    msg = reply[1:].decode(errors="replace")
                    first = msg.split("\n", 1)[0]
                    raise self._fail(i, f"raised ValueError during {what}: {first}\n{msg}",
                                     died=False, cls=WorkerValueError)
                else:
                    msg = reply[1:].decode(errors="replace").rstrip()
                    raise self._fail(i, f"raised an exception during {what}:\n{msg}", died=False)
            for i in died:
                if replies[i] is None:
                    raise self._fail(i, f"died during {what}", died=True)
        return replies  # type: ignore[return-value]

    def _fail(self, i: int, what: str, died: bool, cls=WorkerError) -> WorkerError:
        """Close the pool (worker i first) and build the error that names worker i."""
        proc = self._procs[i]
        pid = proc.pid
        exitcode = None
        if died:
            with contextlib.suppress(Exception):
                proc.join(1.0)
                exitcode = proc.exitcode
            what = f"{what} ({_describe_exit(exitcode)})"
        message = f"worker {i} (pid {pid}) {what}; the VecEnv is closed"
        self._doomed.add(i)
        self._close_now(f"worker {i} (pid {pid}) failed")
        return cls(message, index=i, pid=pid, exitcode=exitcode)

    def _close_now(self, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self._close_reason = reason
        self._finalizer()
