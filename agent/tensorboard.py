"""A dependency-free writer (and reader) of TensorBoard event files, scalars only.

Training metrics are written as TensorBoard event files so that a user who has TensorBoard
installed can watch a run with ``tensorboard --logdir RUN_DIR``, while the agent itself never
imports ``tensorboard``, ``tensorboardX``, ``protobuf`` or TensorFlow: ``torch.utils.tensorboard``
needs the ``tensorboard`` package at import time, and pulling that (with protobuf, grpcio,
werkzeug, ...) into a training install only to append a few floats per step is not worth it.
Scalars are all that is written, and their encoding is small enough to do by hand.

The file format, as TensorBoard reads it:

* An event file is a sequence of TFRecords. Each record is::

      uint64 length         little-endian, of the data
      uint32 masked_crc32c(the 8 length bytes)
      bytes  data           one serialized ``Event`` protocol buffer
      uint32 masked_crc32c(data)

  where crc32c is CRC-32 with the Castagnoli polynomial (reflected 0x82F63B78) and
  ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xA282EAD8`` modulo 2**32.

* The protocol buffer fields used here, checked against ``tensorboard/compat/proto/event.proto``
  and ``tensorboard/compat/proto/summary.proto`` in the tensorflow/tensorboard repository
  (copies of TensorFlow's ``core/util/event.proto`` and ``core/framework/summary.proto``)::

      message Event {
        double wall_time = 1;                   // wire type 1 (64-bit)
        int64 step = 2;                         // wire type 0 (varint)
        oneof what {
          string file_version = 3;              // wire type 2, "brain.Event:2"
          Summary summary = 5;                  // wire type 2
        }
        SourceMetadata source_metadata = 10;    // wire type 2, first event only
      }
      message SourceMetadata { string writer = 1; }
      message Summary {
        message Value {
          string tag = 1;                       // wire type 2
          oneof value { float simple_value = 2; }   // wire type 5 (32-bit)
        }
        repeated Value value = 1;               // wire type 2
      }

* The first record of a file is an ``Event`` holding only ``wall_time``, ``file_version =
  "brain.Event:2"`` and ``source_metadata``; every later record holds a ``Summary``.
* Files are named ``events.out.tfevents.<%010d unix time>.<hostname>.<pid>.<counter>``, as
  TensorBoard's own ``EventFileWriter`` (used by ``torch.utils.tensorboard``) names them; the
  counter is per process, so two writers opened in the same second get different files.

``read_events`` parses such a file back (verifying both CRCs of every record); it is meant for
tests and debugging, not as a general TensorBoard reader: it reads only the fields above and
skips any others.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import socket
import struct
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, BinaryIO

__all__ = ["EventWriter", "crc32c", "masked_crc32c", "read_events"]

FILE_VERSION = "brain.Event:2"
# Written in the first event's SourceMetadata.writer, so a file can be traced back to this code.
WRITER_NAME = "agent.tensorboard"

# --- CRC-32C (Castagnoli) ---------------------------------------------------------------------

_CRC32C_POLY = 0x82F63B78  # 0x1EDC6F41 bit-reversed


def _make_crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data`` (pure Python, one table look-up a byte: fine for small records)."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The CRC as TFRecord stores it: rotated right by 15 bits, plus a constant, mod 2**32."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _frame_record(data: bytes) -> bytes:
    """``data`` in TFRecord framing: length, masked CRC of the length, data, masked CRC."""
    header = struct.pack("<Q", len(data))
    return (
        header
        + struct.pack("<I", masked_crc32c(header))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


# --- Protocol buffer encoding (the few wire forms the Event needs) ----------------------------

_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _varint(value: int) -> bytes:
    # Negative int64 values are encoded as their two's complement in 64 bits (10 bytes).
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, _WIRE_LEN) + _varint(len(payload)) + payload


def _double_field(field: int, value: float) -> bytes:
    return _key(field, _WIRE_I64) + struct.pack("<d", value)


def _float32(value: float) -> bytes:
    """``value`` as a little-endian float32; NaN and inf pass through, finite values too large
    for float32 round to +-inf (as a C cast would) rather than raising like ``struct`` does."""
    try:
        return struct.pack("<f", value)
    except OverflowError:
        return struct.pack("<f", math.copysign(math.inf, value))


def _encode_event(
    wall_time: float,
    step: int,
    *,
    file_version: str | None = None,
    scalars: Mapping[str, float] | None = None,
) -> bytes:
    out = bytearray(_double_field(1, wall_time))
    if step:  # proto3 leaves a zero int64 out; readers default it to 0
        out += _key(2, _WIRE_VARINT) + _varint(step)
    if file_version is not None:
        out += _len_field(3, file_version.encode("utf-8"))
        out += _len_field(10, _len_field(1, WRITER_NAME.encode("utf-8")))  # source_metadata
    if scalars is not None:
        summary = bytearray()
        for tag, value in scalars.items():
            # simple_value is in a oneof, so it is written even when it is 0.0.
            item = _len_field(1, tag.encode("utf-8")) + _key(2, _WIRE_I32) + _float32(value)
            summary += _len_field(1, item)
        out += _len_field(5, bytes(summary))
    return bytes(out)


# --- Writer -----------------------------------------------------------------------------------

_file_counter = itertools.count()
_file_counter_lock = threading.Lock()


def _event_file_name() -> str:
    with _file_counter_lock:
        counter = next(_file_counter)
    # TensorBoard formats the time with "%010d", which truncates it to whole seconds.
    stamp = int(time.time())
    return f"events.out.tfevents.{stamp:010d}.{socket.gethostname()}.{os.getpid()}.{counter}"


_OPEN_FLAGS = (
    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)  # Windows
)


class EventWriter:
    """Appends scalar summaries to a new TensorBoard event file in ``logdir``.

    Each :meth:`add_scalars` call is one record, written with a single ``write`` and, by
    default, flushed to the operating system at once (``flush_every=1``), so a crash of the
    training process loses at most the record being written; a torn record at the end of the
    file is what TensorBoard itself treats as "not written yet". ``flush_every=N`` flushes
    every N-th call instead (and on :meth:`flush` / :meth:`close`). Nothing is ``fsync``-ed:
    an operating-system crash may lose more. Not thread-safe: use one writer per thread.
    """

    def __init__(self, logdir: str | os.PathLike[str], *, flush_every: int = 1) -> None:
        if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
            raise ValueError(f"flush_every must be an int >= 1, got {flush_every!r}")
        self.logdir = os.fspath(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        self._flush_every = flush_every
        self._unflushed = 0
        # Append mode, and O_EXCL: this only ever starts a new file, never writes into one
        # that exists (say another writer's, from the same second, pid and counter value: the
        # counter is per module, so torch.utils.tensorboard keeps its own), and a record once
        # written is never overwritten.
        while True:
            self.path = os.path.join(self.logdir, _event_file_name())
            try:
                fd = os.open(self.path, _OPEN_FLAGS, 0o666)
            except FileExistsError:
                continue  # the next name has the next counter value
            break
        self._file: BinaryIO | None = os.fdopen(fd, "ab")
        self._write(_encode_event(time.time(), 0, file_version=FILE_VERSION))
        self.flush()

    @property
    def closed(self) -> bool:
        return self._file is None

    def _write(self, event: bytes) -> None:
        if self._file is None:
            raise ValueError(f"EventWriter for {self.path} is closed")
        self._file.write(_frame_record(event))

    def add_scalars(
        self, step: int, values: Mapping[str, float], wall_time: float | None = None
    ) -> None:
        """Write one Event at ``step`` holding one ``simple_value`` per tag in ``values``.

        Values are stored as float32, as TensorBoard's ``simple_value`` is; NaN and +-inf are
        kept (TensorBoard shows them). ``wall_time`` defaults to now (seconds since the epoch).
        An empty ``values`` writes nothing.
        """
        if isinstance(step, bool):
            raise TypeError("step must be an int, not a bool")
        step = operator.index(step)  # ints, numpy integers, 0-d integer tensors
        if not _INT64_MIN <= step <= _INT64_MAX:
            raise ValueError(f"step {step} does not fit in an int64")
        scalars: dict[str, float] = {}
        for tag, value in values.items():
            if not isinstance(tag, str) or not tag:
                raise ValueError(f"tags must be non-empty strings, got {tag!r}")
            if isinstance(value, bool):
                raise TypeError(f"value for {tag!r} is a bool, not a number")
            scalars[tag] = float(value)  # also accepts numpy and 0-d torch numbers
        if not scalars:
            return
        stamp = time.time() if wall_time is None else float(wall_time)
        self._write(_encode_event(stamp, step, scalars=scalars))
        self._unflushed += 1
        if self._unflushed >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        """Hand everything written so far to the operating system."""
        if self._file is not None:
            self._file.flush()
            self._unflushed = 0

    def close(self) -> None:
        """Flush and close the file; closing twice is allowed, writing after it is not."""
        if self._file is not None:
            try:
                self._file.flush()
            finally:
                self._file.close()
                self._file = None

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"EventWriter({self.path!r}, {state})"


# --- Reader (tests and debugging) -------------------------------------------------------------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """Split one serialized message into (field number, wire type, value) triples: an int for
    varints, bytes for the fixed-width and length-delimited forms."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        value: Any
        if wire_type == _WIRE_VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire_type in (_WIRE_I64, _WIRE_I32):
            width = 8 if wire_type == _WIRE_I64 else 4
            value = buf[pos : pos + width]
            if len(value) != width:
                raise ValueError("truncated fixed-width field")
            pos += width
        elif wire_type == _WIRE_LEN:
            length, pos = _read_varint(buf, pos)
            value = buf[pos : pos + length]
            if len(value) != length:
                raise ValueError("truncated length-delimited field")
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        out.append((field, wire_type, value))
    return out


def _decode_event(data: bytes) -> dict[str, Any]:
    event: dict[str, Any] = {"wall_time": 0.0, "step": 0, "file_version": None, "scalars": {}}
    for field, wire_type, value in _fields(data):
        if field == 1 and wire_type == _WIRE_I64:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2 and wire_type == _WIRE_VARINT:
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif field == 3 and wire_type == _WIRE_LEN:
            event["file_version"] = value.decode("utf-8")
        elif field == 5 and wire_type == _WIRE_LEN:
            for s_field, s_wire, item in _fields(value):
                if s_field != 1 or s_wire != _WIRE_LEN:
                    continue
                tag: str | None = None
                number: float | None = None
                for v_field, v_wire, v_value in _fields(item):
                    if v_field == 1 and v_wire == _WIRE_LEN:
                        tag = v_value.decode("utf-8")
                    elif v_field == 2 and v_wire == _WIRE_I32:
                        number = struct.unpack("<f", v_value)[0]
                if tag is not None and number is not None:  # other value kinds are skipped
                    event["scalars"][tag] = number
    return event


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Parse an event file into one dict per record, in file order::

        {"wall_time": float, "step": int, "file_version": str | None, "scalars": {tag: float}}

    Both CRCs of every record are checked; a corrupt or truncated record raises ValueError
    naming its byte offset in the file.
    """
    with open(path, "rb") as f:
        buf = f.read()
    events = []
    pos = 0
    while pos < len(buf):
        start = pos
        if len(buf) - pos < 12:
            raise ValueError(f"{path}: truncated record header at byte offset {start}")
        header = buf[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", buf[pos + 8 : pos + 12])
        if header_crc != masked_crc32c(header):
            raise ValueError(f"{path}: length CRC mismatch in record at byte offset {start}")
        pos += 12
        if len(buf) - pos < length + 4:
            raise ValueError(f"{path}: truncated record data at byte offset {start}")
        data = buf[pos : pos + length]
        (data_crc,) = struct.unpack("<I", buf[pos + length : pos + length + 4])
        if data_crc != masked_crc32c(data):
            raise ValueError(f"{path}: data CRC mismatch in record at byte offset {start}")
        pos += length + 4
        try:
            events.append(_decode_event(data))
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: bad Event in record at byte offset {start}: {e}") from e
    return events
