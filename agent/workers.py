"""N environments stepped in parallel, observations and step results in shared memory.

This module is the parent's side: `VecEnv`, the results it returns (`VecStep`), its errors
(`WorkerError`, `WorkerValueError`), the free-running driver (`FreeRun`), and the shutdown of
its processes. The pool's protocol (message framing, command and answer words, the shared
block's layout) is `agent.wire`; the worker process's entry and loop are `agent.worker`. This
docstring tells how the three work together.

ale-py's binding holds the GIL while it emulates, so threads do not run games in parallel; this
module runs `AtariEnv`s in processes. Env ``i`` is ``AtariEnv(config, seed=seed + i)``, so it
plays exactly the trajectory a serial ``AtariEnv`` with that seed plays (or, with
``make_env``, ``make_env(seed + i, config)``: any env with AtariEnv's face, e.g. a test game;
the factory must be picklable to reach forkserver or spawn workers). By default
(``inline_first=True``) env 0 runs in the calling process and envs 1..N-1 in one worker process
each; with ``inline_first=False`` every env has a worker. Running env 0 in the caller keeps N
busy processes on N cores instead of N + 1 (a caller that only waits still has to be scheduled
to send and collect), which is most of what two envs on two cores gain over one (see
scripts/bench_env.py: row (e), and its ``inline_first=False`` context row).

Data path. One shared block (a `multiprocessing` RawArray: an unlinked file in /dev/shm that the
workers map) holds, as numpy views:

- ``obs``          (N, stack, H, W) uint8: each env's acting stack, oldest frame first;
- ``frames``       (N, H, W) uint8: each env's newest frame (what a replay ring stores);
- ``final_frames`` (N, H, W) uint8: the last frame of an episode that ended on this step;
- the per-step scalars: rewards (float32), flags (bool), and the score and length of an
  episode that ended (float64, int64);
- one doorbell word per env each way (see Waiting).

One function, `agent.worker.Slot.step`, steps an env into its row, in a worker and in the
caller alike: the env keeps its acting stack in ``obs[i]`` (`AtariEnv.share_stack`) and steps
with ``out=frames[i]``, so the native kernel writes the new frame straight into both; the
scalars are filled, and when the episode ended (terminated or truncated) that last frame is
copied into ``final_frames[i]``, the score recorded and the env reset (auto-reset): ``obs[i]``
and ``frames[i]`` then hold the new episode's first observation.

Ring mode (``ring=``, a `agent.shm.SharedArray` holding a (rows, H, W) uint8 replay ring, which
every worker maps): the frames go straight from the native kernel into the ring rows that each
call names, in whatever process the env runs, and nowhere else (no copy per step). `reset(slots)`
takes an int64 array (N,): env i's first frame goes into ``ring[slots[i]]``; `step(actions,
slots)` an int64 array (N, 2): env i's new frame goes into ``ring[slots[i, 0]]`` and, only
when that step ends its episode, the next episode's first frame into ``ring[slots[i, 1]]`` (the
ended episode's last frame stays in row slots[i, 0], so there is no ``final_frames`` copy).
``frames`` and ``final_frames`` are then never written; ``obs``, the scalars and the episode
scores are as without a ring. The rows are checked in the parent (shape, integer dtype,
0 <= row < rows) like the actions; that no two envs are given the same row is the caller's
business (the replay gives each env its own block of rows). The ring stays the caller's:
`close()` leaves it mapped.

Per step the parent hands each worker its command (a sequence number, a command byte, the
action and, in ring mode, the two rows) and gets back an ack (the sequence number and an
"episode ended" bit): on x86-64 as shared words (the rows in words 2 and 3 of the command's
row, stored before the command word), elsewhere as a small fixed-size pipe message each way
(see Waiting); no array is pickled. Every worker is sent its action before anything else
happens, so the envs step at the same time; `step()` is `step_async()` (send) then
`step_wait()` (step env 0 in this process when it runs here, then collect the workers'
answers). A caller may do other work between the two (a learner's update) while the workers
step; with ``inline_first`` that overlaps envs 1..N-1 only, since env 0 steps inside
`step_wait()`. The shared block is an unlinked file
(in /dev/shm on Linux), so nothing is left behind whatever way the processes end, and the views
stay valid (holding the last values) after `close()`.

Waiting. On a virtual machine, waking a process whose vCPU went idle costs tens of microseconds,
and a message through a pipe another 5-10 us; an agent step is ~190 us. So a side that waits
first spins for up to ``spin`` seconds (default 1 ms), yielding the CPU (sched_yield, after a
pause instruction) between looks so that any other runnable task (the learner's threads) goes
first, and only then sleeps on its pipe. On x86-64 (`agent.wire.DOORBELL`) the per-step path has no
system call at all unless a side sleeps; the words are native/pool.pyx's, one cache line per
writer and env:

- ``cmd_words[i, 0]`` (parent -> worker i): the command, stored after the parent is done with
  the previous results; ``ack_words[i, 0]`` (worker i -> parent): the ack, stored after the
  results. x86-64 keeps a process's stores in program order for the others (total store order)
  and an aligned 8-byte access is never torn, so the side that sees a word sees what was written
  before it (the native loads and stores are acquire/release, which also keeps the compiler in
  order).
- ``ack_words[i, 1]``: worker i sleeps (or is about to); ``cmd_words[i, 1]``: the parent sleeps
  waiting for worker i.
- ``cmd_words[i, 2]``, ``cmd_words[i, 3]`` (ring mode): the command's two ring rows, stored
  before the command word in the same native call that rings every worker, so a worker that
  sees the word sees them.

The waiter (native `wait_command` / `wait_acks`, without the GIL) looks at its word until it
shows the awaited sequence number or `spin` runs out; then it stores its sleep flag, issues a
full fence and looks once more. Only if the word still does not show it does it sleep: a worker
in a blocking read of its pipe, the parent in poll(2) on the pipes and the process sentinels
with its deadline. Whatever message wakes it, it looks at its word again (and sleeps again if
the word is still old); it clears its flag once the word shows its command or answers. The
notifier (`ring` / `publish`) stores its word, issues a full fence, then loads the peer's flag,
and only when the flag is set writes a wake message (one fixed-size frame) to the pipe.

Why no wake-up is lost: each side stores one location and then loads the other's, with a full
fence between (mfence or a locked instruction: the StoreLoad order that x86's store buffer does
not give without one). In any interleaving of the two fenced store-load pairs at least one side's
load sees the other's store: either the waiter's last look sees the word (and it does not sleep)
or the notifier sees the flag (and writes the wake message, which makes the blocked read or poll
return). Both may happen; then a wake message arrives that nobody needed (a stray). A stray only
makes a later sleep return early to look once more, so it is read and dropped there. The parent
writes its wake messages without blocking (a full pipe already holds messages that will wake
that worker); a worker's blocking wake write cannot stall for good either, because the parent
reads its pipes whenever it sleeps. Command and ack words name their sequence number, so a word
from an older command is never taken for the current one.

Everything else goes through the pipes as framed messages: start (READY with the action set),
errors with their tracebacks (a worker that fails a command sends the error instead of an ack:
the parent, which then never sees the ack, reads it once it sleeps), the state commands (see
Snapshots) and STOP (a spinning worker reads it once its spin ends). Elsewhere than x86-64, or
with ``spin=0``, every command and ack is a pipe message (the system calls order the shared
writes); with ``spin > 0`` a waiting side then polls its pipes, yielding the CPU, before it
sleeps. Resets use the same path as steps.

Snapshots. `get_states()` returns each env's `get_state()` and `set_states(states)` restores
them, for checkpoints and resume (then `step()` goes on without a reset). A state is tens of
KB for ALE and has no fixed size, so it travels through the worker's pipe, pickled: the parent
writes a command message whose size field gives the payload's length, then the payload; the
worker answers with the pickled state, an OK or the error. A shared mailbox would need a size
bound (or a resize protocol) and a second copy in and out; the pipe needs neither, and a
snapshot is rare (once per checkpoint), so its system calls do not matter. With the doorbell
the parent first rings a PIPE command word, so a spinning worker turns to its pipe at once
(and a sleeping one is woken); the worker drops stray wake messages before the command and
answers only through the pipe (no ack word). Both directions are read and written in pieces
with the pool's deadline, so a payload larger than a pipe holds neither blocks the other side
nor hides a dead or hung worker. Neither call is allowed while a `step_async()` waits.

Processes. The start method defaults to "forkserver" on Linux (forking a process that already
runs torch's threads is unsafe; "spawn" is slower to start), else "spawn"; the worker entry is
the module-level `agent.worker.worker_main`. Workers are daemonic and ignore SIGINT, so Ctrl-C
reaches only the parent: a KeyboardInterrupt that lands inside `reset()` or `step()` (env 0's
step included) closes the pool before it propagates (one that comes while the parent spins
without the GIL is raised when the spin ends, within ``spin`` seconds). A worker whose parent
dies reads EOF on its pipe and exits (with "fork", each worker first closes the other workers'
pipe ends it inherited, so that EOF does come). As with any forkserver or spawn pool, a script
must create the VecEnv under ``if __name__ == "__main__":``. ``pids`` lists the worker processes
only; ``env_pids[i]`` is env i's worker, None for env 0 when it runs in the calling process.

Failures. Answers are awaited with a deadline, ``select.poll`` on the pipes and the process
sentinels once the spin is over: a worker that died (its exit code is reported, with the
signal's name), that closed its pipe, or that did not answer within ``timeout`` seconds raises a
`WorkerError` naming its env index and pid. An exception inside a worker's env is sent back with
its traceback and raised as a `WorkerError` (a `WorkerValueError`, also a ValueError, when the
env raised ValueError, e.g. for a bad action). An exception in env 0 run in this process is
raised the same way: a `WorkerValueError` for a ValueError, else a `WorkerError`, with index 0,
pid None (no worker) and the env's exception as its ``__cause__``; env 0 has no timeout there (it
is the caller's own code). After any of these the pool closes itself and stays closed: there is
no worker restart, the run stops cleanly. Closing asks every worker to stop, joins them (about
2 s), then terminates, continues (a stopped process cannot act on SIGTERM) and finally kills the
stragglers through their Process handles: signals go only to the pids this pool started. A
worker already known to be dead or hung is killed at once. Actions are validated in the parent
(shape (N,), integer dtype, within range), as are ring slots, and a bad one raises ValueError
before anything is sent, leaving the pool usable.

A ValueError from an env's set_state is raised as a WorkerValueError naming its env (index 0
for env 0 in this process), and the pool closes as after any worker error; a bad states list
(wrong length, unpicklable) raises ValueError before anything is sent.

Cleanup is a `weakref.finalize` holding only the processes and pipes (not the VecEnv), so an
unclosed VecEnv is closed when it is garbage collected or at interpreter exit; it is the only
thing registered outside the object. A VecEnv is not thread-safe: drive it from one thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import select
import signal
import sys
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent import wire
from agent.config import EnvConfig
from agent.games import ActionSet
from agent.native import PoolBlock
from agent.shm import SharedArray
from agent.wire import (
    ACK_FRAME_SIZE,
    ACTION_LIMIT,
    CMD,
    CMD_FRAME,
    CMD_HEAD,
    ENDED,
    GET_STATE,
    HEADER,
    OK,
    PIPE,
    READY,
    RESET,
    RESET_FRAME,
    SEQ_MASK,
    SET_STATE,
    SHORT_FRAMES,
    STATE,
    STEP,
    STOP_MSG,
    VALUE_ERROR,
    WAKE,
    WAKE_CMD_FRAME,
    block_layout,
    block_views,
    framed,
    pool_block,
    read_rest,
    sched_yield,
)
from agent.worker import Slot, new_env, worker_main

__all__ = ["FreeRun", "VecEnv", "VecStep", "WorkerError", "WorkerValueError",
           "default_start_method"]

_CLOSE_JOIN_S = 2.0


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
        """bool: terminated or truncated (final_frames[i] holds that episode's last frame;
        in ring mode it stays in ring row slots[i, 0], and slots[i, 1] holds the next
        episode's first frame)."""
        return self.terminated | self.truncated


def default_start_method() -> str:
    """"forkserver" where it exists on Linux (safe once torch threads run), else "spawn"."""
    if sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods():
        return "forkserver"
    return "spawn"


def _checked_ring(ring, config: EnvConfig) -> np.ndarray | None:
    """The (rows, H, W) uint8 array of `ring` (a SharedArray), else a ValueError."""
    if ring is None:
        return None
    if not isinstance(ring, SharedArray):
        raise ValueError(f"ring must be None or an agent.shm.SharedArray (shared memory that the "
                         f"workers can map), got {type(ring).__name__}")
    array = ring.array  # ValueError if closed
    h, w = config.frame_shape
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[1:] != (h, w) \
            or len(array) < 1:
        raise ValueError(f"ring must hold a (rows, {h}, {w}) uint8 array (rows >= 1, one frame "
                         f"of config.frame_shape a row), got {array.dtype} {array.shape}")
    return array


# ------------------------------------------------------------------------------ shutdown
def _wait_writable(fd: int, sentinel: int, timeout: float) -> str:
    """Wait up to `timeout` seconds until `fd` takes more bytes: "writable", "died" (the
    process `sentinel` belongs to ended) or "timeout"."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        poller.register(sentinel, select.POLLIN)
        events = dict(poller.poll(int(timeout * 1000) + 1))
        died, writable = sentinel in events, fd in events
    else:  # pragma: no cover - not Linux
        readable, out, _ = select.select([sentinel], [fd], [], timeout)
        died, writable = bool(readable), bool(out)
    return "died" if died else "writable" if writable else "timeout"


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
            conn.send_bytes(STOP_MSG)
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
            self.now = functools.partial(self._poll.poll, 0)
            """[(fd, events)] of the fds ready now (no wait): one poll(2) call."""
        else:  # pragma: no cover - not Linux
            self._poll = None
            self.now = functools.partial(self.wait, 0.0)

    def wait(self, timeout: float) -> list[tuple[int, int]]:
        """[(fd, events)] of the fds ready (readable, hung up or in error) within `timeout`
        seconds."""
        if self._poll is not None:
            return self._poll.poll(0 if timeout <= 0 else int(timeout * 1000) + 1)
        ready = multiprocessing.connection.wait(list(self._objects), timeout)  # pragma: no cover
        return [(r if isinstance(r, int) else r.fileno(), 0) for r in ready]  # pragma: no cover


# ------------------------------------------------------------------------------ the pool
class VecEnv:
    """`num_envs` AtariEnvs, env i being ``AtariEnv(config, seed + i)`` (or
    ``make_env(seed + i, config)``): env 0 in the calling process (``inline_first``, the
    default) and the others in worker processes, or every env in a worker.

    ``obs``, ``frames`` and ``final_frames`` are views on shared memory, overwritten in place by
    every `reset()` and `step()`: copy what must outlive the next call. With a ``ring`` the
    frames go into the ring rows that each call names instead, and ``frames`` and
    ``final_frames`` are not written at all. ``pids`` lists the worker processes' pids only (in
    env order); ``env_pids[i]`` is the pid of the worker that runs env i, None for the env run
    in this process.
    """

    def __init__(self, config: EnvConfig | None = None, num_envs: int = 1, seed: int = 0,
                 timeout: float = 10.0, start_method: str | None = None,
                 start_timeout: float = 60.0, spin: float = 0.001, inline_first: bool = True,
                 make_env=None, ring: SharedArray | None = None):
        """Start the workers and wait until each has loaded its game.

        timeout: seconds a reset or step may take before the pool gives up on a worker.
        start_method: "forkserver", "spawn" or "fork"; None picks `default_start_method()`.
            With forkserver or spawn a script must start the pool under
            ``if __name__ == "__main__":`` (the workers import the main module).
        start_timeout: seconds each worker may take to import and load its ROM.
        spin: seconds a waiting side polls (yielding the CPU; on x86-64 reading the shared
            doorbell words) before it sleeps on its pipe; 0 never polls.
        inline_first: run env 0 in this process (stepped inside `step_wait()`, while the
            workers step envs 1..N-1) and only envs 1..N-1 in workers; with N envs on N cores
            no process then waits for another to be scheduled. False: every env in a worker,
            so that the caller's work between `step_async()` and `step_wait()` overlaps all N
            envs (with inline_first it overlaps only envs 1..N-1).
        make_env: None, or a picklable callable ``(seed, config) -> env`` with AtariEnv's face
            (actions, observation, reset(out), step(action, out), episode_score,
            episode_steps, get_state, set_state, share_stack, close): env i is
            ``make_env(seed + i, config)``, in its worker and in this process alike. None:
            ``AtariEnv(config, seed + i)``.
        ring: None, or a `SharedArray` whose array is a (rows, H, W) uint8 replay ring (H, W:
            config.frame_shape): every frame then goes straight into the row each `reset()` /
            `step()` names (see there), in whatever process its env runs, and ``frames`` and
            ``final_frames`` are not written. The ring stays the caller's: `close()` leaves it
            open.
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
        if not isinstance(inline_first, bool):
            raise ValueError(f"inline_first must be a bool, got {inline_first!r}")
        if make_env is not None and not callable(make_env):
            raise ValueError(f"make_env must be None or a callable (seed, config) -> env, got "
                             f"{make_env!r}")
        self._ring_array: np.ndarray | None = _checked_ring(ring, self.config)
        methods = multiprocessing.get_all_start_methods()
        self.start_method = start_method or default_start_method()
        if self.start_method not in methods:
            raise ValueError(f"start_method must be one of {', '.join(map(repr, methods))} "
                             f"or None, got {start_method!r}")
        if make_env is not None and self.start_method != "fork" and num_envs > inline_first:
            try:
                pickle.dumps(make_env)
            except Exception as exc:
                raise ValueError(f"make_env must be picklable to reach the {self.start_method} "
                                 f"workers (a module-level function, or a functools.partial "
                                 f"of one), got {make_env!r}: {exc}") from exc
        self.num_envs = int(num_envs)
        self.seed = int(seed)
        self.timeout = float(timeout)
        self.spin = float(spin)
        self.inline_first = inline_first
        self.make_env = make_env
        self.ring = ring
        self._first = 1 if inline_first else 0  # env index of worker 0 (self._procs[0])
        self._inline: Slot | None = None  # env 0's slot when it runs in this process
        self._inline_action = 0  # env 0's action, from step_async() to step_wait()
        self._inline_rows: list[int] | None = None  # and its ring rows (ring mode)
        self._rows = 0 if ring is None else len(self._ring_array)  # ring rows
        self._doorbell = wire.DOORBELL and self.spin > 0.0  # (read once: tests may switch it off)
        self._seq = 0  # commands sent to every worker (resets and steps)
        self._closed = False
        self._close_reason: str | None = None
        self._started = False  # reset() was called: step() is allowed
        self._pending = False  # step_async() sent actions that step_wait() has not collected
        self._free: FreeRun | None = None  # an open free_run() (then _pending is True too)
        self._procs: list = []
        self._conns: list = []
        self._doomed: set[int] = set()
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns,
                                           _CLOSE_JOIN_S, self._doomed)
        self.pids: list[int] = []
        self.env_pids: list[int | None] = []

        n, stack, (h, w) = self.num_envs, self.config.stack, self.config.frame_shape
        layout, size = block_layout(n, stack, h, w)
        ctx = multiprocessing.get_context(self.start_method)
        self._block = ctx.RawArray(ctypes.c_uint8, size)
        views = self._views = block_views(self._block, layout)
        self.obs: np.ndarray = views["obs"]
        self.frames: np.ndarray = views["frames"]
        self.final_frames: np.ndarray = views["final_frames"]
        self._pool = pool_block(views, self._first)
        self._scores = views["episode_score"]
        self._lengths = views["episode_steps"]
        self.actions: ActionSet | None = None
        try:
            for i in range(self._first, n):
                parent_end, child_end = ctx.Pipe(duplex=True)
                self._conns.append(parent_end)
                # With "fork" the child inherits every parent end made so far; it closes them,
                # so a worker sees EOF as soon as the parent process itself is gone.
                inherited = tuple(self._conns) if self.start_method == "fork" else ()
                proc = ctx.Process(
                    target=worker_main, name=f"agent-env-worker-{i}", daemon=True,
                    args=(i, self.config, self.seed + i, self._block, layout, child_end,
                          self.spin, inherited, self._doorbell, make_env, ring),
                )
                self._procs.append(proc)
                proc.start()
                child_end.close()
            self.pids[:] = [p.pid for p in self._procs]
            self.env_pids[:] = [None] * self._first + self.pids
            self._sentinels = {p.sentinel: k for k, p in enumerate(self._procs)}
            self._fds = [c.fileno() for c in self._conns]
            self._conn_fds = {fd: k for k, fd in enumerate(self._fds)}
            self._poller = _Poller({**self._conn_fds, **self._sentinels})
            actions = []
            if inline_first:  # while the workers load their ROMs
                try:
                    self._inline = Slot(new_env(make_env, self.config, self.seed), 0, views,
                                         self._pool, self._ring_array)
                except Exception as exc:
                    raise self._inline_failed("start", exc) from exc
                actions.append(self._inline.env.actions)
            replies = self._collect("start", float(start_timeout))
            actions += [pickle.loads(r[1:]) for r in replies]
            if any(a != actions[0] for a in actions):  # pragma: no cover - same config
                raise RuntimeError(f"the envs disagree on the action set: {actions}")
            self.actions = actions[0]
            self._n_actions = len(self.actions)
            self._acts_shape = (n,)
            self._step_frames = [framed(CMD.pack(STEP, a, 0, 0))
                                 for a in range(self._n_actions)]
        except BaseException:
            self._close_now("start failed")
            raise

    # ------------------------------------------------------------------ public face
    def reset(self, slots=None) -> np.ndarray:
        """Reset every env; returns `self.obs` (N, stack, H, W), also updated in place.

        With a ring, `slots` is required: an int64 array (N,), env i's first frame going into
        ``ring.array[slots[i]]`` (``frames`` is not written). Without a ring, no slots.
        """
        self._check_idle("reset")
        rows = None if slots is None and self._rows == 0 else self._check_slots(slots, False)
        try:
            seq = self._seq = (self._seq + 1) & SEQ_MASK
            first = self._first
            if self._doorbell:
                pairs = None if rows is None else [r for row in rows for r in (row, row)]
                if self._pool.ring(seq << 32 | RESET << 24, None, pairs):
                    self._wake()
            else:
                for k in range(len(self._fds)):
                    frame = RESET_FRAME if rows is None else CMD_FRAME.pack(
                        CMD_HEAD, RESET, 0, rows[first + k], 0)
                    self._send(k, frame, "reset")
            if self._inline is not None:
                try:
                    if rows is None:
                        self._inline.reset()
                    else:
                        self._inline.run_ring(RESET, 0, rows[0], rows[0])
                except Exception as exc:
                    raise self._inline_failed("reset", exc) from exc
            if self._fds:
                self._wait("reset")
        except BaseException:
            self._close_now("reset failed")
            raise
        self._started = True
        return self.obs

    def step(self, actions, slots=None) -> VecStep:
        """Step env i with actions[i] (N ints); finished episodes are reset automatically.

        The same as `step_async()` then `step_wait()`, in one call (the hot path). With a ring,
        `slots` is required: an int64 array (N, 2), env i's new frame going into
        ``ring.array[slots[i, 0]]`` and, only when this step ends its episode (terminated or
        truncated), the next episode's first frame into ``ring.array[slots[i, 1]]`` (the
        ended episode's last frame stays in row slots[i, 0]); no other row is written, nor
        ``frames`` or ``final_frames``. Without a ring, no slots.
        """
        if self._closed or self._pending or not self._started:
            self._refuse_step()
        acts = self._check_actions(actions)
        rows = None if slots is None and self._rows == 0 else self._check_slots(slots, True)
        try:
            self._send_step(acts, None, rows)
            return self._finish_step()
        except BaseException:
            self._close_now("step failed")
            raise

    def step_async(self, actions, slots=None) -> None:
        """Send the workers their actions (and ring rows: `slots`, as for `step()`) and return
        at once: they step while the caller works.

        `step_wait()` collects the results (and, with ``inline_first``, steps env 0 itself);
        until then obs, frames and final_frames (or the ring rows named) are being written and
        must not be read.
        """
        if self._closed or self._pending or not self._started:
            self._refuse_step()
        acts = self._check_actions(actions)
        rows = None if slots is None and self._rows == 0 else self._check_slots(slots, True)
        try:
            self._send_step(acts, None, rows)
        except BaseException:
            self._close_now("step failed")
            raise
        self._pending = True

    def step_wait(self) -> VecStep:
        """The results of the step that `step_async()` started (within `timeout` seconds).

        With ``inline_first`` env 0 steps here, in this process, while the workers finish.
        """
        if self._closed:
            self._check_open()
        if not self._pending or self._free is not None:
            self._refuse_step("step_wait")
        self._pending = False
        try:
            return self._finish_step()
        except BaseException:
            self._close_now("step failed")
            raise

    def get_states(self) -> list[dict]:
        """Each env's `get_state()`, in env order: exact snapshots for a checkpoint (restore
        them with `set_states()`). Not while a `step_async()` waits for its `step_wait()`.

        The states come through the workers' pipes (pickled; see Snapshots in the module
        docstring); a worker that fails, dies or does not answer within ``timeout`` raises a
        WorkerError naming it, and the pool closes.
        """
        self._check_idle("get_states")
        what = "get_states"
        try:
            deadline = time.monotonic() + self.timeout
            self._send_pipe_command(GET_STATE, None, what, deadline)
            states = []
            if self._inline is not None:  # while the workers take theirs
                try:
                    states.append(self._inline.env.get_state())
                except Exception as exc:
                    raise self._inline_failed(what, exc) from exc
            for k, reply in enumerate(self._collect_payloads(what, deadline)):
                try:
                    states.append(pickle.loads(reply[1:]))
                except Exception as exc:
                    raise self._fail(k, f"sent a state that cannot be unpickled ({exc})",
                                     died=False) from exc
        except BaseException:
            self._close_now(f"{what} failed")
            raise
        return states

    def set_states(self, states: Sequence) -> None:
        """Restore every env from `states` (a list of N states, from `get_states()` of a pool
        with the same config, in env order): the envs then continue exactly as the snapshot's
        envs would, and `step()` may follow at once (no `reset()`; ``obs`` holds the restored
        stacks). A state that its env refuses (a ValueError from its set_state) raises a
        WorkerValueError naming the env, and the pool closes. Not while a `step_async()` waits
        for its `step_wait()`.
        """
        self._check_idle("set_states")
        n, first, what = self.num_envs, self._first, "set_states"
        if isinstance(states, (str, bytes, dict)) or not isinstance(states, Sequence) \
                or len(states) != n:
            raise ValueError(f"states must be a list of {n} env states (one per env, from "
                             f"get_states()), got {type(states).__name__}"
                             f"{f' of length {len(states)}' if hasattr(states, '__len__') else ''}")
        payloads = []
        for i in range(first, n):
            try:
                payloads.append(pickle.dumps(states[i], pickle.HIGHEST_PROTOCOL))
            except Exception as exc:
                raise ValueError(f"states[{i}] cannot be pickled for its worker "
                                 f"({type(exc).__name__}: {exc})") from exc
        try:
            deadline = time.monotonic() + self.timeout
            self._send_pipe_command(SET_STATE, payloads, what, deadline)
            if self._inline is not None:  # while the workers restore theirs
                try:
                    self._inline.env.set_state(states[0])
                except Exception as exc:
                    raise self._inline_failed(what, exc) from exc
            self._collect_payloads(what, deadline)
        except BaseException:
            self._close_now(f"{what} failed")
            raise
        self._started = True

    def free_run(self) -> FreeRun:
        """Step the envs one at a time instead of in lock step, until the `FreeRun` is closed
        (use it as a context manager): see `FreeRun`. Lock step goes on after it.

        Needs a reset pool without a ring whose workers wait on the shared doorbell words
        (x86-64 with ``spin > 0``); not while a `step_async()` waits for its `step_wait()`.
        """
        self._check_idle("free_run")
        if not self._started:
            raise RuntimeError("call reset() before free_run()")
        if self._rows:
            raise RuntimeError("free_run() steps envs without ring rows, and this VecEnv writes "
                               "its frames into a ring: make one without ring= to run free")
        if not self._doorbell:
            raise RuntimeError("free_run() drives the workers through the shared doorbell words, "
                               "and this VecEnv waits on its pipes (not x86-64, or spin=0): "
                               "make one with spin > 0 on x86-64 to run free")
        self._free = FreeRun(self)
        self._pending = True  # (the lock-step calls are refused until the FreeRun closes)
        return self._free

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
        state = "closed" if self._closed else f"worker pids {self.pids}"
        where = ", env 0 in this process" if self.inline_first else ""
        return (f"VecEnv({self.config.game!r}, num_envs={self.num_envs}, seed={self.seed}, "
                f"{self.start_method}{where}, {state})")

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this VecEnv is closed ({self._close_reason}); make a new one")

    def _check_idle(self, what: str) -> None:
        """Raise unless the pool is open, no step_async() waits for its step_wait() and no
        free_run() is open."""
        self._check_open()
        if self._free is not None:
            raise RuntimeError(f"{what}() while a free_run() is open; close it first")
        if self._pending:
            raise RuntimeError(f"{what}() while step_async() is waiting for its step_wait(); "
                               f"call step_wait() first")

    def _refuse_step(self, what: str = "step") -> None:
        """Raise why `what` cannot run now (closed, not reset, a free_run() open, a
        step_async() pending or, for step_wait, none)."""
        self._check_open()
        if self._free is not None:
            raise RuntimeError(f"{what}() while a free_run() is open; close it first")
        if what == "step_wait":
            raise RuntimeError("step_wait() without a step_async() before it")
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if self._pending:
            raise RuntimeError("step_async() was already called; call step_wait() first")

    def _check_actions(self, actions) -> list[int]:
        """`actions` as a list of N ints in range, else a ValueError that names the bad one."""
        n, k = self.num_envs, self._n_actions
        if type(actions) is np.ndarray and actions.shape == self._acts_shape \
                and actions.dtype.kind in "iu":
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
        if min(acts) < 0 or max(acts) >= k:
            i, a = next((i, a) for i, a in enumerate(acts) if not 0 <= a < k)
            raise ValueError(f"actions[{i}] = {a} is out of range: {self.config.game}'s "
                             f"{self.actions.kind} action set accepts ints in [0, {k - 1}]")
        return acts

    def _check_slots(self, slots, step: bool) -> list[int]:
        """`slots` (step: (N, 2), reset: (N,)) flattened into a list of ints, each a row of
        the ring, else a ValueError that names the bad one (or says why there are none)."""
        n, rows = self.num_envs, self._rows
        shape = (n, 2) if step else (n,)
        call = "step()" if step else "reset()"
        if rows == 0:
            raise ValueError(f"slots name rows of a ring, and this VecEnv has no ring (it "
                             f"keeps its frames in .frames): call {call} without slots, or "
                             f"make the VecEnv with ring=SharedArray(...)")
        if type(slots) is np.ndarray and slots.shape == shape and slots.dtype.kind in "iu":
            flat = slots.ravel().tolist()
        else:
            if slots is None:
                raise ValueError(f"this VecEnv writes its frames into its ring: {call} needs "
                                 f"slots, an int64 array of shape {shape} of ring rows")
            try:
                array = np.asarray(slots)
            except Exception as exc:
                raise ValueError(f"slots must be an int64 array of shape {shape}, got "
                                 f"{slots!r}") from exc
            if array.shape != shape:
                raise ValueError(f"slots must have shape {shape} for {call}, got shape "
                                 f"{array.shape}: {slots!r}")
            if array.dtype.kind not in "iu":
                raise ValueError(f"slots must be ints (int64), got dtype {array.dtype}: "
                                 f"{slots!r}")
            flat = array.ravel().tolist()
        if min(flat) < 0 or max(flat) >= rows:
            k, row = next((k, r) for k, r in enumerate(flat) if not 0 <= r < rows)
            where = f"slots[{k // 2}, {k % 2}]" if step else f"slots[{k}]"
            raise ValueError(f"{where} = {row} is out of range: the ring has {rows} rows, so a "
                             f"slot must be in [0, {rows - 1}]")
        return flat

    def _step(self, acts, slots=None) -> VecStep:
        """One step with `acts` (and `slots`) not checked (tests use it to reach the env's own
        check)."""
        acts = [int(a) for a in acts]
        if not all(0 <= a < ACTION_LIMIT for a in acts):
            raise ValueError(f"actions must be in [0, {ACTION_LIMIT}) to be sent, got {acts}")
        rows = None if slots is None else [int(r) for r in np.asarray(slots).ravel()]
        pairs = [(0, 0)] * len(acts) if rows is None else list(zip(rows[0::2], rows[1::2]))
        self._send_step(acts, [CMD_FRAME.pack(CMD_HEAD, STEP, a, *p)
                               for a, p in zip(acts, pairs)], rows)
        return self._finish_step()

    def _send_step(self, acts: list[int], frames=None, rows=None) -> None:
        """Start a step: ring the doorbells (waking a worker that sleeps), or send worker k its
        step frame through the pipe: `frames` (when given) holds env i's frame at i, else the
        prepared frame of action acts[i] is sent (with `rows`, the ring mode's 2N rows, a
        frame that carries env i's rows rows[2i] and rows[2i + 1])."""
        seq = self._seq = (self._seq + 1) & SEQ_MASK
        if self._doorbell:
            if self._pool.ring(seq << 32 | STEP << 24, acts, rows):  # > 0: some worker sleeps
                self._wake()
        elif self._fds:
            first, write, k = self._first, os.write, 0
            if frames is None:
                if rows is None:
                    step_frames = self._step_frames
                    frames = [step_frames[a] for a in acts]
                else:
                    pack, head = CMD_FRAME.pack, CMD_HEAD
                    frames = [pack(head, STEP, a, rows[2 * i], rows[2 * i + 1])
                              for i, a in enumerate(acts)]
            try:
                for fd in self._fds:
                    write(fd, frames[first + k])
                    k += 1
            except OSError:  # EPIPE, ECONNRESET: the worker is gone
                raise self._fail(k, "closed its pipe before step", died=True) from None
        if self._first:
            self._inline_action = acts[0]
            self._inline_rows = rows

    def _wake(self) -> None:
        """Write a wake message to every worker whose sleep flag is set, without blocking: a
        full pipe already holds messages that will wake its worker (wake messages are hints;
        the command is in the word)."""
        pool, first = self._pool, self._first
        for k in range(len(self._fds)):
            if pool.sleeping(first + k):
                self._wake_worker(k)

    def _wake_worker(self, k: int) -> None:
        """Write worker k a wake message without blocking (see `_wake`)."""
        fd = self._fds[k]
        os.set_blocking(fd, False)
        gone = False
        try:
            os.write(fd, WAKE_CMD_FRAME)  # 29 bytes: all or nothing on a socket
        except BlockingIOError:
            pass
        except OSError:  # EPIPE, ECONNRESET: the worker is gone
            gone = True
        finally:
            os.set_blocking(fd, True)
        if gone:  # (after set_blocking: the failure closes the pipe)
            raise self._fail(k, "closed its pipe", died=True)

    def _finish_step(self) -> VecStep:
        """Step env 0 here (inline_first), collect the workers' answers, assemble the results."""
        ended0 = False
        if self._inline is not None:
            try:
                rows = self._inline_rows
                if rows is None:
                    ended0 = self._inline.step(self._inline_action)
                else:
                    ended0 = self._inline.step_ring(self._inline_action, rows[0], rows[1])
            except Exception as exc:
                raise self._inline_failed("step", exc) from exc
        ended = self._wait("step") if self._fds else 0
        reward, raw, terminated, truncated, life_lost, learn_terminal = self._pool.results()
        scores = []
        if ended0 or ended:
            first, pool = self._first, self._pool
            envs = [0] if ended0 else []
            if type(ended) is list:  # pipe-only mode: the replies
                envs += [first + k for k, r in enumerate(ended) if r == ENDED]
            elif ended:
                envs += [i for i in range(first, self.num_envs) if pool.ended(i)]
            scores = [(i, float(self._scores[i]), int(self._lengths[i])) for i in envs]
        return VecStep(reward, raw, terminated, truncated, life_lost, learn_terminal, scores)

    def _wait(self, what: str):
        """Every worker's answer to the last command, within `timeout` seconds, else a
        WorkerError. With the doorbell: the number of workers whose episode ended (0 in the
        common case); otherwise the replies (a list, in worker order)."""
        if not self._doorbell:
            replies = self._collect(what, self.timeout)
            return replies if ENDED in replies else 0
        ended = self._pool.wait_acks(self._seq, self.spin)
        if ended >= 0:
            return ended
        # Asleep: the parent's sleep flags are set, so a worker that acks from now on writes a
        # wake message. Sleep on the pipes and the sentinels, and look again after every
        # message; a wake message from an earlier wait (stray) only costs one more look.
        pool, seq, read, first = self._pool, self._seq, self._read_reply, self._first
        deadline = time.monotonic() + max(0.0, self.timeout - self.spin)  # (spun `spin` s)
        while True:
            messages, died = self._await(deadline, what, self.timeout,
                                         lambda k: not pool.acked(first + k, seq))
            for k in messages:
                read(k, what)  # a wake; an error raises
            if died:  # (after the messages: an error sent before exiting names the cause)
                raise self._fail(died[0], f"died during {what}", died=True)
            ended = pool.wait_acks(seq, 0.0)
            if ended >= 0:
                return ended

    def _read_reply(self, k: int, what: str) -> bytes:
        """Worker k's next message (it is ready to be read): a short one's tag, or READY's
        payload; raises the WorkerError it carries, or one for a closed pipe."""
        fd = self._fds[k]
        try:
            reply = os.read(fd, ACK_FRAME_SIZE)
            tag = SHORT_FRAMES.get(reply)
            if tag is not None:
                return tag
            reply = read_rest(fd, reply)  # a longer message (or, on a hung-up pipe, none)
        except (EOFError, OSError):
            raise self._fail(k, f"closed its pipe during {what}", died=True) from None
        return self._check_reply(k, reply, what)

    def _check_reply(self, k: int, reply: bytes, what: str) -> bytes:
        """Worker k's long message `reply`, unless it carries an error: then the WorkerError
        (a WorkerValueError for a ValueError) is raised, naming the worker."""
        tag = reply[:1]
        if tag == VALUE_ERROR:
            msg = reply[1:].decode(errors="replace")
            first_line = msg.split("\n", 1)[0]
            raise self._fail(k, f"raised ValueError during {what}: {first_line}\n{msg}",
                             died=False, cls=WorkerValueError)
        if tag not in (READY, STATE, OK):
            msg = reply[1:].decode(errors="replace").rstrip()
            raise self._fail(k, f"raised an exception during {what}:\n{msg}", died=False)
        return reply

    def _hung(self, k: int, what: str, timeout: float) -> WorkerError:
        return self._fail(k, f"did not answer within {timeout:g} s during {what} (hung, "
                             f"stopped or too slow; see VecEnv's timeout)", died=False)

    def _send_pipe_command(self, cmd: int, payloads: list[bytes] | None, what: str,
                           deadline: float) -> None:
        """Send every worker the state command `cmd` through its pipe, with its payload
        (payloads[k], or none) after it; with the doorbell, first ring PIPE, which makes a
        spinning worker read its pipe at once (and a sleeping one is woken)."""
        if not self._fds:
            return
        if self._doorbell:
            seq = self._seq = (self._seq + 1) & SEQ_MASK
            if self._pool.ring(seq << 32 | PIPE << 24):
                self._wake()
        for k in range(len(self._fds)):
            data = b"" if payloads is None else payloads[k]
            self._write_all(k, CMD_FRAME.pack(CMD_HEAD, cmd, len(data), 0, 0) + data,
                            deadline, what)

    def _write_all(self, k: int, data: bytes, deadline: float, what: str) -> None:
        """All of `data` into worker k's pipe before `deadline` (a payload may be far larger
        than the pipe holds: the worker reads while this writes), else the WorkerError of a
        worker that died, closed its pipe or stopped reading (hung)."""
        fd, sentinel, view = self._fds[k], self._procs[k].sentinel, memoryview(data)
        error = None
        os.set_blocking(fd, False)
        try:
            while view:
                try:
                    view = view[os.write(fd, view):]
                    continue
                except BlockingIOError:  # the pipe is full: wait until the worker reads
                    pass
                except OSError:  # EPIPE, ECONNRESET: the worker is gone
                    error = f"closed its pipe during {what}"
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    error = ""
                    break
                if _wait_writable(fd, sentinel, left) == "died":
                    error = f"died during {what}"
                    break
        finally:
            os.set_blocking(fd, True)
        if error == "":
            raise self._hung(k, what, self.timeout)
        if error is not None:
            raise self._fail(k, error, died=True)

    def _collect_payloads(self, what: str, deadline: float) -> list[bytes]:
        """Every worker's answer to a state command (in worker order), read from the pipes
        before `deadline`: each a whole message (its tag first), read in pieces as it comes
        (a state may be far larger than a pipe holds); stray wake messages (doorbell) are
        dropped, an error is raised naming its worker, as are a death and a hang."""
        n = len(self._fds)
        replies: list[bytes | None] = [None] * n
        buffers = [bytearray() for _ in range(n)]
        pending = n
        while pending:
            messages, died = self._await(deadline, what, self.timeout,
                                         lambda j: replies[j] is None)
            for k in messages:
                try:
                    chunk = os.read(self._fds[k], 1 << 20)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise self._fail(k, f"closed its pipe during {what}", died=True)
                buffer = buffers[k]
                buffer += chunk
                while replies[k] is None and len(buffer) >= HEADER.size:
                    (size,) = HEADER.unpack_from(buffer)
                    end = HEADER.size + size
                    if len(buffer) < end:
                        break
                    message = bytes(buffer[HEADER.size:end])
                    del buffer[:end]
                    if message != WAKE:  # (a stray wake from an earlier step)
                        replies[k] = self._check_reply(k, message, what)
                        pending -= 1
            for k in died:  # (after the messages: an error sent before exiting names it)
                if replies[k] is None:
                    raise self._fail(k, f"died during {what}", died=True)
        return replies  # type: ignore[return-value]

    def _send(self, k: int, frame: bytes, what: str) -> None:
        try:
            os.write(self._fds[k], frame)
        except OSError:  # EPIPE, ECONNRESET: the worker is gone
            raise self._fail(k, f"closed its pipe before {what}", died=True) from None

    def _collect(self, what: str, timeout: float) -> list[bytes]:
        """One answer from every worker (in worker order) through the pipes: its READY at
        start, and in pipe-only mode its answer to the last command; within `timeout` seconds,
        else a WorkerError. With `spin`, polls (yielding the CPU) before sleeping once some
        worker answered, or at once when env 0 stepped in this process (the workers, started
        at the same time, are about done)."""
        n = len(self._fds)
        replies: list[bytes | None] = [None] * n
        pending = n
        deadline = time.monotonic() + timeout
        spin = self.spin if what != "start" else 0.0
        read, now = self._read_reply, self._poller.now
        eager = self._inline is not None
        while pending:
            ready = now() if spin > 0.0 and (eager or pending < n) else None
            if ready == []:  # the rest are close: poll a while before sleeping
                clock = time.perf_counter
                end = clock() + spin
                while not ready and clock() < end:
                    sched_yield()
                    ready = now()
            if ready:
                messages, died = self._sort_ready(ready)
            else:
                messages, died = self._await(deadline, what, timeout,
                                             lambda j: replies[j] is None)
            for k in messages:
                replies[k] = read(k, what)  # (one answer per command: no wake messages here)
                pending -= 1
            for k in died:
                if replies[k] is None:
                    raise self._fail(k, f"died during {what}", died=True)
        return replies  # type: ignore[return-value]

    def _await(self, deadline: float, what: str, timeout: float,
               waiting) -> tuple[list[int], list[int]]:
        """Sleep on the pipes and the process sentinels until one is ready (`_sort_ready`);
        past `deadline`, the hung error of the first worker k that `waiting(k)` says is still
        awaited (`timeout`: the seconds it was given)."""
        while True:
            ready = self._poller.wait(deadline - time.monotonic())
            if ready:
                return self._sort_ready(ready)
            if time.monotonic() >= deadline:
                k = next(j for j in range(len(self._fds)) if waiting(j))
                raise self._hung(k, what, timeout)

    def _sort_ready(self, ready: list) -> tuple[list[int], list[int]]:
        """A poll's ready fds as (workers with a message in their pipe, workers whose process
        ended)."""
        messages, died = [], []
        for fd, _ in ready:
            k = self._conn_fds.get(fd)
            if k is None:
                died.append(self._sentinels[fd])
            else:
                messages.append(k)
        return messages, died

    def _fail(self, k: int, what: str, died: bool, cls=WorkerError) -> WorkerError:
        """Close the pool (worker k first) and build the error that names it by its env index."""
        proc = self._procs[k]
        index, pid = self._first + k, proc.pid
        exitcode = None
        if died:
            with contextlib.suppress(Exception):
                proc.join(1.0)
                exitcode = proc.exitcode
            what = f"{what} ({_describe_exit(exitcode)})"
        message = f"worker {index} (pid {pid}) {what}; the VecEnv is closed"
        self._doomed.add(k)
        self._close_now(f"worker {index} (pid {pid}) failed")
        return cls(message, index=index, pid=pid, exitcode=exitcode)

    def _inline_failed(self, what: str, exc: Exception) -> WorkerError:
        """Close the pool after env 0, run in this process, raised `exc`; the error to raise
        (from `exc`, which keeps the traceback): a WorkerValueError for a ValueError, as a
        worker's would be, else a WorkerError; index 0, pid None (no worker process)."""
        cls = WorkerValueError if isinstance(exc, ValueError) else WorkerError
        message = (f"env 0 (in this process) raised {type(exc).__name__} during {what}: {exc}; "
                   f"the VecEnv is closed")
        self._close_now("env 0 (in this process) failed")
        return cls(message, index=0, pid=None)

    def _close_now(self, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self._close_reason = reason
        self._finalizer()
        inline, self._inline = self._inline, None
        if inline is not None:
            with contextlib.suppress(Exception):
                inline.env.close()


# ------------------------------------------------------------------------------ free running
class FreeRun:
    """The envs of a `VecEnv` stepped one at a time, each at its own pace, instead of in lock
    step: made by `VecEnv.free_run()`, closed by `close()` or at the end of a ``with`` block.

    `send(i, action)` starts a step of env i; `answered(i)` says whether that step is done.
    Then ``vec.obs[i]`` and row i of `results()` hold it, and `episode(i)` the score of the
    episode it ended (ended episodes are reset, as in lock step). Env 0, when it runs in this
    process (``inline_first``), steps inside `send(0, action)` and has always answered. Each
    env still plays exactly its serial trajectory: env i is ``AtariEnv(config, seed + i)`` fed
    the actions sent to it.

    What it is for: measuring what dropping lock step would gain (scripts/bench_schedules.py);
    the trainer keeps lock step, which its replay streams rely on. The workers are driven through
    the same shared command and answer words as in lock step, one worker at a time, so `send()`
    and `answered()` make no system call unless a worker sleeps. While the FreeRun is open the
    VecEnv's own calls are refused. `close()` waits for the steps in flight, steps every worker
    env that is behind with `catch_up_action` until all have had the same number of commands,
    and hands the pool back to lock step. A worker that fails, dies or hangs (found by
    `close()`, or by `send()` when its pipe is closed) raises a WorkerError naming it, and the
    VecEnv closes, as in lock step; so does an exception that leaves the ``with`` block (the
    workers may then be anywhere in their steps).
    """

    def __init__(self, vec: VecEnv):
        self._vec = vec
        self._inline = vec._inline  # env 0's Slot when it runs in this process
        self._first = vec._first
        self._lowest = -1 if vec._inline is not None else 0  # the lowest k of `_worker`
        self.workers = range(vec._first, vec.num_envs)
        """The env indices that run in worker processes."""
        cmd, ack = vec._views["cmd_words"], vec._views["ack_words"]
        # One single-row PoolBlock a worker: VecEnv's own rings every worker at once. (Its
        # scalars are unused: every env stores its own into the VecEnv's rows.)
        self._bells = [PoolBlock(cmd[i:i + 1], ack[i:i + 1], np.zeros((2, 1), np.float32),
                                 np.zeros((4, 1), np.bool_)) for i in self.workers]
        self._seqs = [vec._seq] * len(self._bells)  # each worker's last command (lock step's)
        self._sent = [0] * len(self._bells)  # steps sent to each worker since the start
        self._ended0 = False  # env 0's last step (here) ended its episode
        self._open = True

    def send(self, i: int, action: int) -> None:
        """Start a step of env i with `action` (an int of the action set); a worker env must
        have answered its last step. Env 0 run here steps now, before this returns."""
        vec = self._vec
        if not self._open or vec._closed:
            self._check_open()
        self._check_action(action)
        k = self._worker(i)
        if k < 0:
            try:
                self._ended0 = self._inline.step(int(action))
            except Exception as exc:
                raise vec._inline_failed("a free run", exc) from exc
            return
        bell, seq = self._bells[k], self._seqs[k]
        if not bell.acked(0, seq):
            raise RuntimeError(f"env {i} has not answered its last step: send it the next one "
                               f"once answered({i}) is True")
        seq = self._seqs[k] = (seq + 1) & SEQ_MASK
        self._sent[k] += 1
        if bell.ring(seq << 32 | STEP << 24, [int(action)]):  # it sleeps: wake it
            vec._wake_worker(k)

    def answered(self, i: int) -> bool:
        """Whether env i's last step is done (True for env 0 run here, and before any send)."""
        k = self._worker(i)
        return k < 0 or self._bells[k].acked(0, self._seqs[k])

    def episode(self, i: int) -> tuple[float, int] | None:
        """(raw score, agent steps) of the episode that env i's last answered step ended (the
        env was reset), else None."""
        k = self._worker(i)
        if not (self._ended0 if k < 0 else self._bells[k].ended(0)):
            return None
        vec = self._vec
        return float(vec._scores[i]), int(vec._lengths[i])

    def results(self) -> VecStep:
        """Every env's row as it is now: row i is env i's last answered step, so read only the
        rows of envs that answered (the others are being written). Its ``episode_scores`` is
        empty: `episode(i)` says which episode an env's step ended."""
        return VecStep(*self._vec._pool.results(), [])

    def close(self, catch_up_action: int = 0) -> int:
        """Wait for every worker's step in flight, step the worker envs that are behind with
        `catch_up_action` until each has had as many steps as the most stepped one, and hand
        the pool back to lock step. Returns the number of catch-up steps; idempotent (0)."""
        if not self._open:
            return 0
        self._check_action(catch_up_action)
        vec, steps = self._vec, 0
        try:
            top = max(self._sent, default=0)
            for k, i in enumerate(self.workers):
                self._wait(k)
                while self._sent[k] < top:
                    self.send(i, catch_up_action)
                    steps += 1
                    self._wait(k)
        except BaseException:
            vec._close_now("a free run failed")
            raise
        finally:
            self._open = False
            vec._free = None
        if self._bells:
            vec._seq = self._seqs[0]  # (every worker's now)
        vec._pending = False
        return steps

    def __enter__(self) -> FreeRun:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:  # the workers may be anywhere in their steps: lock step cannot go on
            self._open = False
            self._vec._free = None
            self._vec._close_now("a free run failed")

    def _check_open(self) -> None:
        self._vec._check_open()
        if not self._open:
            raise RuntimeError("this FreeRun is closed; the VecEnv steps in lock step again")

    def _check_action(self, action) -> None:
        n = self._vec._n_actions
        if isinstance(action, bool) or not isinstance(action, (int, np.integer)) \
                or not 0 <= action < n:
            raise ValueError(f"action must be an int in [0, {n - 1}] (the action set of "
                             f"{self._vec.config.game}), got {action!r}")

    def _worker(self, i: int) -> int:
        """Env i's worker number k (its place in the VecEnv's worker lists), -1 for env 0 run
        here; a ValueError for an index that is no env."""
        if isinstance(i, (int, np.integer)) and not isinstance(i, bool):
            k = i - self._first
            if self._lowest <= k < len(self._bells):
                return k
        raise ValueError(f"env index must be an int in [0, {self._vec.num_envs - 1}], got {i!r}")

    def _wait(self, k: int) -> None:
        """Until worker k answered its last command, within the VecEnv's timeout; a message
        on a pipe is read on the way (a stray wake is dropped, an error raised), a worker that
        died or hung raises its WorkerError."""
        vec, bell, seq = self._vec, self._bells[k], self._seqs[k]
        deadline = time.monotonic() + vec.timeout
        while not bell.acked(0, seq):
            ready = vec._poller.now()
            if ready:
                messages, died = vec._sort_ready(ready)
                for j in messages:
                    vec._read_reply(j, "a free run")  # a wake; an error raises
                if died:
                    raise vec._fail(died[0], "died during a free run", died=True)
            elif time.monotonic() > deadline:
                raise vec._hung(k, "a free run", vec.timeout)
            else:
                sched_yield()
