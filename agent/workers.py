"""N environments stepped in parallel, observations and step results in shared memory.

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

One function, `_Slot.step`, steps an env into its row, in a worker and in the caller alike: the
env keeps its acting stack in ``obs[i]`` (`AtariEnv.share_stack`) and steps with
``out=frames[i]``, so the native kernel writes the new frame straight into both; the scalars
are filled, and when the episode ended (terminated or truncated) that last
frame is copied into ``final_frames[i]``, the score recorded and the env reset (auto-reset):
``obs[i]`` and ``frames[i]`` then hold the new episode's first observation.

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
first, and only then sleeps on its pipe. On x86-64 (`_DOORBELL`) the per-step path has no
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
the parent first rings a _PIPE command word, so a spinning worker turns to its pipe at once
(and a sleeping one is woken); the worker drops stray wake messages before the command and
answers only through the pipe (no ack word). Both directions are read and written in pieces
with the pool's deadline, so a payload larger than a pipe holds neither blocks the other side
nor hides a dead or hung worker. Neither call is allowed while a `step_async()` waits.

Processes. The start method defaults to "forkserver" on Linux (forking a process that already
runs torch's threads is unsafe; "spawn" is slower to start), else "spawn"; the worker entry is
the module-level `_worker_main`. Workers are daemonic and ignore SIGINT, so Ctrl-C reaches only
the parent: a KeyboardInterrupt that lands inside `reset()` or `step()` (env 0's step included)
closes the pool before it propagates (one that comes while the parent spins without the GIL is
raised when the spin ends, within ``spin`` seconds). A worker whose parent dies reads EOF on its
pipe and exits (with "fork", each worker first closes the other workers' pipe ends it inherited,
so that EOF does come). As with any forkserver or spawn pool, a script must create the VecEnv
under ``if __name__ == "__main__":``. ``pids`` lists the worker processes only; ``env_pids[i]``
is env i's worker, None for env 0 when it runs in the calling process.

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
import platform
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
from agent.native import PoolBlock
from agent.shm import SharedArray

__all__ = ["VecEnv", "VecStep", "WorkerError", "WorkerValueError", "default_start_method"]

# Every message is framed as multiprocessing.Connection frames it (a 4-byte big-endian size,
# then the payload), so Connection.send_bytes/recv_bytes and raw os.write/os.read (a microsecond
# each instead of three) read each other's messages.
_HEADER = struct.Struct("!i")


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


# Parent -> worker: one fixed-size message: the command; the action index (a step) or the size
# of the payload that follows the message (a state command); the two ring rows (ring mode).
_CMD = struct.Struct("<Bqqq")
_CMD_FRAME_SIZE = _HEADER.size + _CMD.size
_CMD_FRAME = struct.Struct(f"<{_HEADER.size}sBqqq")  # a whole message: header, then _CMD
_CMD_HEAD = _HEADER.pack(_CMD.size)
_STEP, _RESET, _STOP, _WAKE_CMD = 1, 2, 3, 4
_GET_STATE, _SET_STATE = 5, 6  # state commands: always through the pipe (see Snapshots)
_PIPE = 7  # doorbell: "your next command is in your pipe"
_STOP_MSG = _CMD.pack(_STOP, 0, 0, 0)
_RESET_FRAME = _frame(_CMD.pack(_RESET, 0, 0, 0))
_WAKE_CMD_FRAME = _frame(_CMD.pack(_WAKE_CMD, 0, 0, 0))  # doorbell: "look at your command word"
# Worker -> parent: the first byte says what follows.
_OK = b"k"  # done; the results are in shared memory (pipe-only mode)
_ENDED = b"d"  # done, and the episode ended (final frame and score in shared memory)
_WAKE = b"w"  # doorbell: "look at the ack words"
_OK_FRAME, _ENDED_FRAME, _WAKE_FRAME = _frame(_OK), _frame(_ENDED), _frame(_WAKE)
_ACK_FRAME_SIZE = len(_OK_FRAME)
_SHORT_FRAMES = {_OK_FRAME: _OK, _ENDED_FRAME: _ENDED, _WAKE_FRAME: _WAKE}
_READY = b"r"  # started: a pickled ActionSet follows
_STATE = b"s"  # the answer to _GET_STATE: the pickled state follows
_ERROR = b"e"  # an exception: its formatted traceback follows (utf-8)
_VALUE_ERROR = b"v"  # a ValueError: its message, then its traceback

# The doorbell words (see "Waiting" in the module docstring and native/pool.pyx): a command word
# is the command's sequence number (mod 2**31), its command byte and its action; an ack word is
# the sequence number and the "episode ended" bit.
_SEQ_MASK = 0x7FFFFFFF
_ACTION_LIMIT = 1 << 24
_DOORBELL = platform.machine().lower() in {"x86_64", "amd64"}
"""Whether the doorbell words are used here: x86-64 makes a process's stores visible to the
others in program order (total store order), so a side that sees a word also sees what was
written before it, and an aligned 8-byte load or store is one instruction, never torn. Elsewhere
every command and answer goes through the pipes, whose system calls order the shared writes."""

_ALIGN = 64
_CLOSE_JOIN_S = 2.0
_sched_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
"""Give the CPU to any other runnable task, if there is one (used while polling the pipes)."""


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
        # The doorbells: row i's word 0, one cache line a row (no false sharing between envs).
        ("cmd_words", np.int64, (n, _ALIGN // 8)),  # written by the parent, read by worker i
        ("ack_words", np.int64, (n, _ALIGN // 8)),  # written by worker i, read by the parent
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


# ------------------------------------------------------------------------------ one env's slot
class _Slot:
    """Env ``index`` and its row of the shared block: the one code that steps or resets an env
    into shared memory, used alike by a worker process and, for an in-process env, the parent.
    With a replay ring (`ring`: the (rows, H, W) array) the frames go into the rows each
    command names (`step_ring`, `run_ring`) instead of ``frames[i]``."""

    __slots__ = ("env", "index", "frame", "final", "store", "scores", "lengths", "ring")

    def __init__(self, env, index: int, views: dict[str, np.ndarray], block: PoolBlock,
                 ring: np.ndarray | None = None):
        self.env = env
        self.index = index
        self.frame = views["frames"][index]
        self.final = views["final_frames"][index]
        env.share_stack(views["obs"][index])  # the env keeps its acting stack in obs[i]
        self.store = block.store_step  # the six scalars in one native call
        self.scores = views["episode_score"]
        self.lengths = views["episode_steps"]
        self.ring = ring

    def step(self, action: int) -> bool:
        """Step with `action`, fill the row; on an episode's end (terminated or truncated) keep
        its last frame and score and reset (auto-reset). Returns whether the episode ended."""
        env, frame = self.env, self.frame
        if not self.store(self.index, env.step(action, out=frame)):  # frame: shared memory
            return False
        i = self.index
        self.final[...] = frame
        self.scores[i] = env.episode_score
        self.lengths[i] = env.episode_steps
        env.reset(out=frame)
        return True

    def reset(self) -> None:
        """Start a new episode: its first frame in ``frames[i]``, its stack in ``obs[i]``."""
        self.env.reset(out=self.frame)

    def run(self, cmd: int, action: int) -> bool:
        """A worker's command (_STEP with `action`, or _RESET); whether an episode ended."""
        if cmd == _STEP:
            return self.step(action)
        if cmd == _RESET:
            self.reset()
            return False
        raise RuntimeError(f"unknown command {cmd}")

    def step_ring(self, action: int, row: int, next_row: int) -> bool:
        """`step` into the ring: the new frame into ``ring[row]``; on an episode's end its
        score is kept and the env reset, the new episode's first frame into
        ``ring[next_row]`` (the last frame stays in ``ring[row]``). Whether it ended."""
        env, ring = self.env, self.ring
        if not self.store(self.index, env.step(action, out=ring[row])):  # ring: shared memory
            return False
        i = self.index
        self.scores[i] = env.episode_score
        self.lengths[i] = env.episode_steps
        env.reset(out=ring[next_row])
        return True

    def run_ring(self, cmd: int, action: int, row: int, next_row: int) -> bool:
        """`run` into the ring: _STEP as `step_ring`, _RESET's first frame into ``ring[row]``."""
        if cmd == _STEP:
            return self.step_ring(action, row, next_row)
        if cmd == _RESET:
            self.env.reset(out=self.ring[row])
            return False
        raise RuntimeError(f"unknown command {cmd}")


def _make_env(make_env, config: EnvConfig, seed: int):
    """Env ``make_env(seed, config)``, or ``AtariEnv(config, seed)`` when `make_env` is None."""
    if make_env is not None:
        return make_env(seed, config)
    from agent.env import AtariEnv

    return AtariEnv(config, seed)


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


def _pool_block(views: dict[str, np.ndarray], first: int) -> PoolBlock:
    return PoolBlock(views["cmd_words"], views["ack_words"], views["rewards"], views["flags"],
                     first)


# ------------------------------------------------------------------------------ the worker
def _worker_main(index: int, config: EnvConfig, seed: int, block, layout: dict, conn,
                 spin: float = 0.0, inherited: Sequence = (), doorbell: bool = False,
                 make_env=None, ring: SharedArray | None = None) -> None:
    """One worker: an env (``make_env(seed, config)``, by default ``AtariEnv(config, seed)``)
    driven over `conn`, its results written into the shared block, its frames into `ring`'s
    rows when there is a ring.

    With `doorbell` the commands come in the word ``cmd_words[index]`` and the answers go to
    ``ack_words[index]`` (the pipe carries only wake messages, state commands, errors, READY and
    STOP; see "Waiting" in the module docstring); without, every command and answer is a pipe
    message.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for other in inherited:  # "fork" only: pipe ends of the parent that this copy must not keep
        other.close()
    env = None
    try:
        env = _make_env(make_env, config, seed)
        views = _views(block, layout)
        pool = _pool_block(views, index)
        slot = _Slot(env, index, views, pool, None if ring is None else ring.array)
        conn.send_bytes(_READY + pickle.dumps(env.actions))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            conn.send_bytes(_error_reply(exc))
        return
    try:
        if doorbell:
            _serve_doorbell(index, pool, slot, conn, spin)
        else:
            _serve_pipe(slot, conn, spin)
    except (BrokenPipeError, ConnectionResetError, EOFError):  # the parent is gone
        return
    finally:
        env.close()


def _serve_doorbell(index: int, pool: PoolBlock, slot: _Slot, conn, spin: float) -> None:
    """Run the commands of word ``cmd_words[index]`` until STOP (or EOF) comes on the pipe.

    A _PIPE word says that the command (a state command) is in the pipe: it is read there
    (stray wake messages before it dropped), run, and answered through the pipe, with no ack
    word."""
    fd, read, write, unpack = conn.fileno(), os.read, os.write, _CMD.unpack_from
    run, wait, publish = slot.run, pool.wait_command, pool.publish
    run_ring, slots, ringed = slot.run_ring, pool.slots, slot.ring is not None
    want = 0
    held = None  # a pipe command read while asleep, before its _PIPE word was seen
    while True:
        want = (want + 1) & _SEQ_MASK
        word = wait(index, want, spin)  # spins, then sets the sleep flag and looks again
        while word < 0:  # asleep: a message on the pipe wakes us
            data = read(fd, _CMD_FRAME_SIZE)  # every parent -> worker frame has this size
            if len(data) < _CMD_FRAME_SIZE:
                data = _read_exactly(fd, _CMD_FRAME_SIZE, data)  # EOFError: the parent is gone
            cmd = unpack(data, _HEADER.size)[0]
            if cmd == _STOP:
                return
            if cmd != _WAKE_CMD:  # (the parent rings _PIPE before it writes the command)
                held = data
            word = wait(index, want, 0.0)  # a wake (maybe a stray one): look again
        cmd = (word >> 24) & 0xFF
        if cmd == _PIPE:
            if held is None:
                held = _next_command(fd)
                if held is None:  # STOP
                    return
            _run_pipe_command(slot, conn, held)
            held = None
            continue
        try:
            if ringed:
                ended = run_ring(cmd, word & 0xFFFFFF, *slots(index))
            else:
                ended = run(cmd, word & 0xFFFFFF)
        except Exception as exc:
            conn.send_bytes(_error_reply(exc))
            continue
        if publish(index, want << 1 | ended):  # the ack after the results; the parent sleeps
            write(fd, _WAKE_FRAME)


def _next_command(fd: int) -> bytes | None:
    """The next command message on the pipe, stray wake messages dropped; None for STOP."""
    while True:
        data = _read_exactly(fd, _CMD_FRAME_SIZE)  # EOFError: the parent is gone
        cmd = _CMD.unpack_from(data, _HEADER.size)[0]
        if cmd == _STOP:
            return None
        if cmd != _WAKE_CMD:
            return data


def _run_pipe_command(slot: _Slot, conn, message: bytes) -> None:
    """Run the state command in `message` (its payload follows it on the pipe) and answer
    through the pipe: _STATE and the pickled state, _OK, or the error."""
    cmd, size = _CMD.unpack_from(message, _HEADER.size)[:2]
    payload = _read_payload(conn.fileno(), size)
    try:
        if cmd == _GET_STATE:
            reply = _STATE + pickle.dumps(slot.env.get_state(), pickle.HIGHEST_PROTOCOL)
        elif cmd == _SET_STATE:
            slot.env.set_state(pickle.loads(payload))
            reply = _OK
        else:
            raise RuntimeError(f"unknown command {cmd}")
    except Exception as exc:
        reply = _error_reply(exc)
    conn.send_bytes(reply)


def _serve_pipe(slot: _Slot, conn, spin: float) -> None:
    """Run the commands that come on the pipe until STOP (or EOF)."""
    fd, read, write, unpack = conn.fileno(), os.read, os.write, _CMD.unpack_from
    run, run_ring, ringed = slot.run, slot.run_ring, slot.ring is not None
    ready, clock, yield_cpu = _readiness(conn), time.perf_counter, _sched_yield
    while True:
        # Poll a short while (yielding the CPU to any other runnable task) before sleeping on
        # the pipe: a vCPU woken from idle costs tens of microseconds on a virtual machine.
        if spin > 0.0 and not ready():
            end = clock() + spin
            while clock() < end:
                yield_cpu()
                if ready():
                    break
        data = read(fd, _CMD_FRAME_SIZE)  # every parent -> worker frame has this size
        if len(data) < _CMD_FRAME_SIZE:
            data = _read_exactly(fd, _CMD_FRAME_SIZE, data)  # EOFError: the parent is gone
        cmd, action, row, next_row = unpack(data, _HEADER.size)
        if cmd == _STOP:
            return
        if cmd >= _GET_STATE:  # a state command; its payload follows
            _run_pipe_command(slot, conn, data)
            continue
        try:
            if ringed:
                ended = run_ring(cmd, action, row, next_row)
            else:
                ended = run(cmd, action)
        except Exception as exc:
            conn.send_bytes(_error_reply(exc))
            continue
        write(fd, _ENDED_FRAME if ended else _OK_FRAME)


def _error_reply(exc: BaseException) -> bytes:
    """The reply that carries `exc` back: a ValueError's message and traceback, or any other
    exception's traceback (raised in the parent as WorkerValueError or WorkerError)."""
    if isinstance(exc, ValueError):
        return _VALUE_ERROR + f"{exc}\n{traceback.format_exc()}".encode()
    return _ERROR + traceback.format_exc().encode()


def _read_exactly(fd: int, size: int, got: bytes = b"") -> bytes:
    """`got` completed to `size` bytes read from `fd`; EOFError if the other end closed first."""
    while len(got) < size:
        more = os.read(fd, size - len(got))
        if not more:
            raise EOFError
        got += more
    return got


def _read_payload(fd: int, size: int) -> bytearray:
    """`size` bytes read from `fd` into one buffer (no copy per chunk); EOFError at EOF."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        more = os.readv(fd, [view[got:]])
        if not more:
            raise EOFError
        got += more
    return buffer


def _read_rest(fd: int, head: bytes) -> bytes:
    """The payload of the message on `fd` whose first bytes, `head`, were read already."""
    head = _read_exactly(fd, _HEADER.size, head)
    (size,) = _HEADER.unpack_from(head)
    if size < 0:  # pragma: no cover - Connection's frame for messages over 2 GiB
        raise OSError(f"unexpected message size {size}")
    return _read_exactly(fd, _HEADER.size + size, head)[_HEADER.size:]


def _readiness(conn):
    """A no-wait "is a message waiting on `conn`?" (one poll(2) call where poll exists)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        poll = poller.poll
        return lambda: bool(poll(0))
    return lambda: conn.poll(0)  # pragma: no cover - not Linux


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
        self._inline: _Slot | None = None  # env 0's slot when it runs in this process
        self._inline_action = 0  # env 0's action, from step_async() to step_wait()
        self._inline_rows: list[int] | None = None  # and its ring rows (ring mode)
        self._rows = 0 if ring is None else len(self._ring_array)  # ring rows
        self._doorbell = _DOORBELL and self.spin > 0.0  # (read once: tests may switch it off)
        self._seq = 0  # commands sent to every worker (resets and steps)
        self._closed = False
        self._close_reason: str | None = None
        self._started = False  # reset() was called: step() is allowed
        self._pending = False  # step_async() sent actions that step_wait() has not collected
        self._procs: list = []
        self._conns: list = []
        self._doomed: set[int] = set()
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns,
                                           _CLOSE_JOIN_S, self._doomed)
        self.pids: list[int] = []
        self.env_pids: list[int | None] = []

        n, stack, (h, w) = self.num_envs, self.config.stack, self.config.frame_shape
        layout, size = _layout(n, stack, h, w)
        ctx = multiprocessing.get_context(self.start_method)
        self._block = ctx.RawArray(ctypes.c_uint8, size)
        views = _views(self._block, layout)
        self.obs: np.ndarray = views["obs"]
        self.frames: np.ndarray = views["frames"]
        self.final_frames: np.ndarray = views["final_frames"]
        self._pool = _pool_block(views, self._first)
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
                    target=_worker_main, name=f"agent-env-worker-{i}", daemon=True,
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
                    self._inline = _Slot(_make_env(make_env, self.config, self.seed), 0, views,
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
            self._step_frames = [_frame(_CMD.pack(_STEP, a, 0, 0))
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
            seq = self._seq = (self._seq + 1) & _SEQ_MASK
            first = self._first
            if self._doorbell:
                pairs = None if rows is None else [r for row in rows for r in (row, row)]
                if self._pool.ring(seq << 32 | _RESET << 24, None, pairs):
                    self._wake()
            else:
                for k in range(len(self._fds)):
                    frame = _RESET_FRAME if rows is None else _CMD_FRAME.pack(
                        _CMD_HEAD, _RESET, 0, rows[first + k], 0)
                    self._send(k, frame, "reset")
            if self._inline is not None:
                try:
                    if rows is None:
                        self._inline.reset()
                    else:
                        self._inline.run_ring(_RESET, 0, rows[0], rows[0])
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
        if not self._pending:
            raise RuntimeError("step_wait() without a step_async() before it")
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
            self._send_pipe_command(_GET_STATE, None, what, deadline)
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
            self._send_pipe_command(_SET_STATE, payloads, what, deadline)
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
        """Raise unless the pool is open and no step_async() waits for its step_wait()."""
        self._check_open()
        if self._pending:
            raise RuntimeError(f"{what}() while step_async() is waiting for its step_wait(); "
                               f"call step_wait() first")

    def _refuse_step(self) -> None:
        """Raise why a step cannot start now (closed, not reset, or a step_async() pending)."""
        self._check_open()
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
        if not all(0 <= a < _ACTION_LIMIT for a in acts):
            raise ValueError(f"actions must be in [0, {_ACTION_LIMIT}) to be sent, got {acts}")
        rows = None if slots is None else [int(r) for r in np.asarray(slots).ravel()]
        pairs = [(0, 0)] * len(acts) if rows is None else list(zip(rows[0::2], rows[1::2]))
        self._send_step(acts, [_CMD_FRAME.pack(_CMD_HEAD, _STEP, a, *p)
                               for a, p in zip(acts, pairs)], rows)
        return self._finish_step()

    def _send_step(self, acts: list[int], frames=None, rows=None) -> None:
        """Start a step: ring the doorbells (waking a worker that sleeps), or send worker k its
        step frame through the pipe: `frames` (when given) holds env i's frame at i, else the
        prepared frame of action acts[i] is sent (with `rows`, the ring mode's 2N rows, a
        frame that carries env i's rows rows[2i] and rows[2i + 1])."""
        seq = self._seq = (self._seq + 1) & _SEQ_MASK
        if self._doorbell:
            if self._pool.ring(seq << 32 | _STEP << 24, acts, rows):  # > 0: some worker sleeps
                self._wake()
        elif self._fds:
            first, write, k = self._first, os.write, 0
            if frames is None:
                if rows is None:
                    step_frames = self._step_frames
                    frames = [step_frames[a] for a in acts]
                else:
                    pack, head = _CMD_FRAME.pack, _CMD_HEAD
                    frames = [pack(head, _STEP, a, rows[2 * i], rows[2 * i + 1])
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
        for k, fd in enumerate(self._fds):
            if pool.sleeping(first + k):
                os.set_blocking(fd, False)
                gone = False
                try:
                    os.write(fd, _WAKE_CMD_FRAME)  # 29 bytes: all or nothing on a socket
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
                envs += [first + k for k, r in enumerate(ended) if r == _ENDED]
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
            return replies if _ENDED in replies else 0
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
            reply = os.read(fd, _ACK_FRAME_SIZE)
            tag = _SHORT_FRAMES.get(reply)
            if tag is not None:
                return tag
            reply = _read_rest(fd, reply)  # a longer message (or, on a hung-up pipe, none)
        except (EOFError, OSError):
            raise self._fail(k, f"closed its pipe during {what}", died=True) from None
        return self._check_reply(k, reply, what)

    def _check_reply(self, k: int, reply: bytes, what: str) -> bytes:
        """Worker k's long message `reply`, unless it carries an error: then the WorkerError
        (a WorkerValueError for a ValueError) is raised, naming the worker."""
        tag = reply[:1]
        if tag == _VALUE_ERROR:
            msg = reply[1:].decode(errors="replace")
            first_line = msg.split("\n", 1)[0]
            raise self._fail(k, f"raised ValueError during {what}: {first_line}\n{msg}",
                             died=False, cls=WorkerValueError)
        if tag not in (_READY, _STATE, _OK):
            msg = reply[1:].decode(errors="replace").rstrip()
            raise self._fail(k, f"raised an exception during {what}:\n{msg}", died=False)
        return reply

    def _hung(self, k: int, what: str, timeout: float) -> WorkerError:
        return self._fail(k, f"did not answer within {timeout:g} s during {what} (hung, "
                             f"stopped or too slow; see VecEnv's timeout)", died=False)

    def _send_pipe_command(self, cmd: int, payloads: list[bytes] | None, what: str,
                           deadline: float) -> None:
        """Send every worker the state command `cmd` through its pipe, with its payload
        (payloads[k], or none) after it; with the doorbell, first ring _PIPE, which makes a
        spinning worker read its pipe at once (and a sleeping one is woken)."""
        if not self._fds:
            return
        if self._doorbell:
            seq = self._seq = (self._seq + 1) & _SEQ_MASK
            if self._pool.ring(seq << 32 | _PIPE << 24):
                self._wake()
        for k in range(len(self._fds)):
            data = b"" if payloads is None else payloads[k]
            self._write_all(k, _CMD_FRAME.pack(_CMD_HEAD, cmd, len(data), 0, 0) + data,
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
                while replies[k] is None and len(buffer) >= _HEADER.size:
                    (size,) = _HEADER.unpack_from(buffer)
                    end = _HEADER.size + size
                    if len(buffer) < end:
                        break
                    message = bytes(buffer[_HEADER.size:end])
                    del buffer[:end]
                    if message != _WAKE:  # (a stray wake from an earlier step)
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
                    _sched_yield()
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
