"""One worker process of the pool (`agent.workers.VecEnv`): its entry point and its loop.

`worker_main` is what each worker process runs: it builds its env, maps the shared block (and
the replay ring, if any), says READY with the env's action set, then serves the parent's
commands until STOP or until the parent is gone (EOF on its pipe): through its doorbell words
(`_serve_doorbell`, x86-64) or through its pipe alone (`_serve_pipe`). State commands
(snapshots) always come and go through the pipe (`_run_pipe_command`). An exception in the env
is sent back as an error reply (`agent.wire.error_reply`) and the worker serves on; the parent
decides what it means.

`Slot` is the one code that steps or resets an env into its row of shared memory; the parent
uses it too, for env 0 when that env runs in the calling process. The messages and words are
`agent.wire`'s; why they are shaped so is told in `agent.workers`' module docstring.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import time
from collections.abc import Sequence

import numpy as np

from agent.config import EnvConfig
from agent.native import PoolBlock
from agent.shm import SharedArray
from agent.wire import (
    CMD,
    CMD_FRAME_SIZE,
    ENDED_FRAME,
    GET_STATE,
    HEADER,
    OK,
    OK_FRAME,
    PIPE,
    READY,
    RESET,
    SEQ_MASK,
    SET_STATE,
    STATE,
    STEP,
    STOP,
    WAKE_CMD,
    WAKE_FRAME,
    block_views,
    error_reply,
    pool_block,
    read_exactly,
    read_payload,
    sched_yield,
)

__all__ = ["Slot", "new_env", "worker_main"]


# ------------------------------------------------------------------------------ one env's slot
class Slot:
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
        """A worker's command (STEP with `action`, or RESET); whether an episode ended."""
        if cmd == STEP:
            return self.step(action)
        if cmd == RESET:
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
        """`run` into the ring: STEP as `step_ring`, RESET's first frame into ``ring[row]``."""
        if cmd == STEP:
            return self.step_ring(action, row, next_row)
        if cmd == RESET:
            self.env.reset(out=self.ring[row])
            return False
        raise RuntimeError(f"unknown command {cmd}")


def new_env(make_env, config: EnvConfig, seed: int):
    """Env ``make_env(seed, config)``, or ``AtariEnv(config, seed)`` when `make_env` is None."""
    if make_env is not None:
        return make_env(seed, config)
    from agent.env import AtariEnv

    return AtariEnv(config, seed)


# ------------------------------------------------------------------------------ the worker
def worker_main(index: int, config: EnvConfig, seed: int, block, layout: dict, conn,
                spin: float = 0.0, inherited: Sequence = (), doorbell: bool = False,
                make_env=None, ring: SharedArray | None = None) -> None:
    """One worker: an env (``make_env(seed, config)``, by default ``AtariEnv(config, seed)``)
    driven over `conn`, its results written into the shared block, its frames into `ring`'s
    rows when there is a ring.

    With `doorbell` the commands come in the word ``cmd_words[index]`` and the answers go to
    ``ack_words[index]`` (the pipe carries only wake messages, state commands, errors, READY and
    STOP; see "Waiting" in agent.workers' docstring); without, every command and answer is a pipe
    message.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for other in inherited:  # "fork" only: pipe ends of the parent that this copy must not keep
        other.close()
    env = None
    try:
        env = new_env(make_env, config, seed)
        views = block_views(block, layout)
        pool = pool_block(views, index)
        slot = Slot(env, index, views, pool, None if ring is None else ring.array)
        conn.send_bytes(READY + pickle.dumps(env.actions))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            conn.send_bytes(error_reply(exc))
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


def _serve_doorbell(index: int, pool: PoolBlock, slot: Slot, conn, spin: float) -> None:
    """Run the commands of word ``cmd_words[index]`` until STOP (or EOF) comes on the pipe.

    A PIPE word says that the command (a state command) is in the pipe: it is read there
    (stray wake messages before it dropped), run, and answered through the pipe, with no ack
    word."""
    fd, read, write, unpack = conn.fileno(), os.read, os.write, CMD.unpack_from
    run, wait, publish = slot.run, pool.wait_command, pool.publish
    run_ring, slots, ringed = slot.run_ring, pool.slots, slot.ring is not None
    want = 0
    held = None  # a pipe command read while asleep, before its PIPE word was seen
    while True:
        want = (want + 1) & SEQ_MASK
        word = wait(index, want, spin)  # spins, then sets the sleep flag and looks again
        while word < 0:  # asleep: a message on the pipe wakes us
            data = read(fd, CMD_FRAME_SIZE)  # every parent -> worker frame has this size
            if len(data) < CMD_FRAME_SIZE:
                data = read_exactly(fd, CMD_FRAME_SIZE, data)  # EOFError: the parent is gone
            cmd = unpack(data, HEADER.size)[0]
            if cmd == STOP:
                return
            if cmd != WAKE_CMD:  # (the parent rings PIPE before it writes the command)
                held = data
            word = wait(index, want, 0.0)  # a wake (maybe a stray one): look again
        cmd = (word >> 24) & 0xFF
        if cmd == PIPE:
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
            conn.send_bytes(error_reply(exc))
            continue
        if publish(index, want << 1 | ended):  # the ack after the results; the parent sleeps
            write(fd, WAKE_FRAME)


def _next_command(fd: int) -> bytes | None:
    """The next command message on the pipe, stray wake messages dropped; None for STOP."""
    while True:
        data = read_exactly(fd, CMD_FRAME_SIZE)  # EOFError: the parent is gone
        cmd = CMD.unpack_from(data, HEADER.size)[0]
        if cmd == STOP:
            return None
        if cmd != WAKE_CMD:
            return data


def _run_pipe_command(slot: Slot, conn, message: bytes) -> None:
    """Run the state command in `message` (its payload follows it on the pipe) and answer
    through the pipe: STATE and the pickled state, OK, or the error."""
    cmd, size = CMD.unpack_from(message, HEADER.size)[:2]
    payload = read_payload(conn.fileno(), size)
    try:
        if cmd == GET_STATE:
            reply = STATE + pickle.dumps(slot.env.get_state(), pickle.HIGHEST_PROTOCOL)
        elif cmd == SET_STATE:
            slot.env.set_state(pickle.loads(payload))
            reply = OK
        else:
            raise RuntimeError(f"unknown command {cmd}")
    except Exception as exc:
        reply = error_reply(exc)
    conn.send_bytes(reply)


def _serve_pipe(slot: Slot, conn, spin: float) -> None:
    """Run the commands that come on the pipe until STOP (or EOF)."""
    fd, read, write, unpack = conn.fileno(), os.read, os.write, CMD.unpack_from
    run, run_ring, ringed = slot.run, slot.run_ring, slot.ring is not None
    ready, clock, yield_cpu = _readiness(conn), time.perf_counter, sched_yield
    while True:
        # Poll a short while (yielding the CPU to any other runnable task) before sleeping on
        # the pipe: a vCPU woken from idle costs tens of microseconds on a virtual machine.
        if spin > 0.0 and not ready():
            end = clock() + spin
            while clock() < end:
                yield_cpu()
                if ready():
                    break
        data = read(fd, CMD_FRAME_SIZE)  # every parent -> worker frame has this size
        if len(data) < CMD_FRAME_SIZE:
            data = read_exactly(fd, CMD_FRAME_SIZE, data)  # EOFError: the parent is gone
        cmd, action, row, next_row = unpack(data, HEADER.size)
        if cmd == STOP:
            return
        if cmd >= GET_STATE:  # a state command; its payload follows
            _run_pipe_command(slot, conn, data)
            continue
        try:
            if ringed:
                ended = run_ring(cmd, action, row, next_row)
            else:
                ended = run(cmd, action)
        except Exception as exc:
            conn.send_bytes(error_reply(exc))
            continue
        write(fd, ENDED_FRAME if ended else OK_FRAME)


def _readiness(conn):
    """A no-wait "is a message waiting on `conn`?" (one poll(2) call where poll exists)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        poll = poller.poll
        return lambda: bool(poll(0))
    return lambda: conn.poll(0)  # pragma: no cover - not Linux
