"""The worker pool's protocol: what the parent (`agent.workers.VecEnv`) and its worker processes
(`agent.worker`) say to each other, and where in shared memory they say it.

This module holds no process and no state, only the vocabulary both sides share:

- message framing: every pipe message is a 4-byte big-endian size, then the payload, as
  `multiprocessing.Connection` frames it (`HEADER`, `framed`);
- the parent's commands: one fixed-size message (`CMD`: the command byte, the action or a
  payload's size, the two ring rows) and the command bytes (`STEP`, `RESET`, `STOP`, the state
  commands `GET_STATE` / `SET_STATE`, and the doorbell's `WAKE_CMD` and `PIPE`);
- the workers' answers: a tag byte first (`OK`, `ENDED`, `WAKE`, `READY`, `STATE`, `ERROR`,
  `VALUE_ERROR`), and `error_reply`, which packs an exception for the parent;
- the doorbell words: a command word is ``seq << 32 | command << 24 | action``, an ack word
  ``seq << 1 | episode ended``, sequence numbers modulo 2**31 (`SEQ_MASK`); `DOORBELL` says
  whether this machine uses them (x86-64) or every command and answer goes through the pipes;
- the shared block's layout (`block_layout`, `block_views`,
  `pool_block`): the observations, frames,
  per-step scalars and one 64-byte row of doorbell words per env and direction;
- reading a pipe by its raw file descriptor (`read_exactly`, `read_payload`, `read_rest`).

Why the protocol is shaped this way (spinning, sleep flags, the wake handshake, snapshots
through the pipes) is told in `agent.workers`' module docstring, under "Waiting" and
"Snapshots"; the native half of the words is native/pool.pyx.
"""

from __future__ import annotations

import os
import platform
import struct
import time
import traceback

import numpy as np

from agent.native import PoolBlock

# Every message is framed as multiprocessing.Connection frames it (a 4-byte big-endian size,
# then the payload), so Connection.send_bytes/recv_bytes and raw os.write/os.read (a microsecond
# each instead of three) read each other's messages.
HEADER = struct.Struct("!i")


def framed(payload: bytes) -> bytes:
    """`payload` as one pipe message: its size, then the payload."""
    return HEADER.pack(len(payload)) + payload


# Parent -> worker: one fixed-size message: the command; the action index (a step) or the size
# of the payload that follows the message (a state command); the two ring rows (ring mode).
CMD = struct.Struct("<Bqqq")
CMD_FRAME_SIZE = HEADER.size + CMD.size
CMD_FRAME = struct.Struct(f"<{HEADER.size}sBqqq")  # a whole message: header, then CMD
CMD_HEAD = HEADER.pack(CMD.size)
STEP, RESET, STOP, WAKE_CMD = 1, 2, 3, 4
GET_STATE, SET_STATE = 5, 6  # state commands: always through the pipe (see Snapshots)
PIPE = 7  # doorbell: "your next command is in your pipe"
STOP_MSG = CMD.pack(STOP, 0, 0, 0)
RESET_FRAME = framed(CMD.pack(RESET, 0, 0, 0))
WAKE_CMD_FRAME = framed(CMD.pack(WAKE_CMD, 0, 0, 0))  # doorbell: "look at your command word"
# Worker -> parent: the first byte says what follows.
OK = b"k"  # done; the results are in shared memory (pipe-only mode)
ENDED = b"d"  # done, and the episode ended (final frame and score in shared memory)
WAKE = b"w"  # doorbell: "look at the ack words"
OK_FRAME, ENDED_FRAME, WAKE_FRAME = framed(OK), framed(ENDED), framed(WAKE)
ACK_FRAME_SIZE = len(OK_FRAME)
SHORT_FRAMES = {OK_FRAME: OK, ENDED_FRAME: ENDED, WAKE_FRAME: WAKE}
READY = b"r"  # started: a pickled ActionSet follows
STATE = b"s"  # the answer to GET_STATE: the pickled state follows
ERROR = b"e"  # an exception: its formatted traceback follows (utf-8)
VALUE_ERROR = b"v"  # a ValueError: its message, then its traceback

# The doorbell words (see "Waiting" in agent.workers' docstring and native/pool.pyx): a command
# word is the command's sequence number (mod 2**31), its command byte and its action; an ack
# word is the sequence number and the "episode ended" bit.
SEQ_MASK = 0x7FFFFFFF
ACTION_LIMIT = 1 << 24
DOORBELL = platform.machine().lower() in {"x86_64", "amd64"}
"""Whether the doorbell words are used here: x86-64 makes a process's stores visible to the
others in program order (total store order), so a side that sees a word also sees what was
written before it, and an aligned 8-byte load or store is one instruction, never torn. Elsewhere
every command and answer goes through the pipes, whose system calls order the shared writes.
A VecEnv reads it when it is made (tests switch it off to cover the pipes alone)."""

ALIGN = 64
sched_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
"""Give the CPU to any other runnable task, if there is one (used while polling the pipes)."""


def error_reply(exc: BaseException) -> bytes:
    """The reply that carries `exc` back: a ValueError's message and traceback, or any other
    exception's traceback (raised in the parent as WorkerValueError or WorkerError)."""
    if isinstance(exc, ValueError):
        return VALUE_ERROR + f"{exc}\n{traceback.format_exc()}".encode()
    return ERROR + traceback.format_exc().encode()


# ------------------------------------------------------------------------------ shared layout
def block_layout(n: int, stack: int, h: int, w: int) -> tuple[dict, int]:
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
        ("cmd_words", np.int64, (n, ALIGN // 8)),  # written by the parent, read by worker i
        ("ack_words", np.int64, (n, ALIGN // 8)),  # written by worker i, read by the parent
    ]
    layout, offset = {}, 0
    for name, dtype, shape in fields:
        layout[name] = (offset, dtype, shape)
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        offset += -(-size // ALIGN) * ALIGN
    return layout, offset


def block_views(block, layout: dict) -> dict[str, np.ndarray]:
    """The shared arrays of `block` (a buffer laid out by `block_layout`), as numpy views."""
    buf = np.frombuffer(block, dtype=np.uint8)
    views = {}
    for name, (offset, dtype, shape) in layout.items():
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        views[name] = buf[offset:offset + size].view(dtype).reshape(shape)
    return views


def pool_block(views: dict[str, np.ndarray], first: int) -> PoolBlock:
    """Native access to the words and scalars among `views` (from `block_views`); the parent's
    ring and wait_acks cover envs `first`..N-1 (a worker's calls name its own index)."""
    return PoolBlock(views["cmd_words"], views["ack_words"], views["rewards"], views["flags"],
                     first)


# ------------------------------------------------------------------------------ reading a pipe
def read_exactly(fd: int, size: int, got: bytes = b"") -> bytes:
    """`got` completed to `size` bytes read from `fd`; EOFError if the other end closed first."""
    while len(got) < size:
        more = os.read(fd, size - len(got))
        if not more:
            raise EOFError
        got += more
    return got


def read_payload(fd: int, size: int) -> bytearray:
    """`size` bytes read from `fd` into one buffer (no copy per chunk); EOFError at EOF."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        more = os.readv(fd, [view[got:]])
        if not more:
            raise EOFError
        got += more
    return buffer


def read_rest(fd: int, head: bytes) -> bytes:
    """The payload of the message on `fd` whose first bytes, `head`, were read already."""
    head = read_exactly(fd, HEADER.size, head)
    (size,) = HEADER.unpack_from(head)
    if size < 0:  # pragma: no cover - Connection's frame for messages over 2 GiB
        raise OSError(f"unexpected message size {size}")
    return read_exactly(fd, HEADER.size + size, head)[HEADER.size:]
