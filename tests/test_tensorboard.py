"""agent.tensorboard: the dependency-free TensorBoard event-file writer and its reader.

The cross-checks against TensorBoard's own readers run only where `tensorboard` is importable
(it is not a dependency of this project); elsewhere they are skipped.
"""

import math
import os
import re
import socket
import struct
import time
from pathlib import Path

import pytest

from agent.tensorboard import EventWriter, crc32c, masked_crc32c, read_events


def f32(x: float) -> float:
    """``x`` rounded to float32, as a simple_value stores it."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


# Several steps, including a zero step, a large one and a negative one (int64 varints).
STEPS = [
    (0, {"loss": 0.5, "reward/mean": 0.0}),
    (1, {"loss": 0.1, "reward/mean": -21.0, "epsilon": 1.0}),
    (250_000, {"loss": 1e-8, "reward/mean": 3.25, "lr": 6.25e-5}),
    (2**40, {"loss": 123456.789}),
    (-3, {"loss": -0.0}),
]


def write_steps(logdir, steps=STEPS) -> str:
    with EventWriter(logdir) as w:
        for i, (step, values) in enumerate(steps):
            w.add_scalars(step, values, wall_time=1_700_000_000.0 + i * 0.25)
    return w.path


def test_crc32c_known_vectors():
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720 B.4
    assert crc32c(bytes(range(32))) == 0x46DD794E  # RFC 3720 B.4


def test_masked_crc_is_rotate_plus_constant():
    crc = crc32c(b"123456789")
    expected = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc32c(b"123456789") == expected


def test_file_name_follows_tensorboard(tmp_path):
    before = int(time.time())
    with EventWriter(tmp_path / "run") as a, EventWriter(tmp_path / "run") as b:
        pass
    assert a.path != b.path  # the per-process counter keeps same-second files apart
    for w in (a, b):
        name = os.path.basename(w.path)
        m = re.fullmatch(r"events\.out\.tfevents\.(\d{10})\.(.+)\.(\d+)\.(\d+)", name)
        assert m, name
        assert int(m.group(1)) >= before
        assert m.group(2) == socket.gethostname()
        assert int(m.group(3)) == os.getpid()


def test_never_writes_into_an_existing_file(tmp_path, monkeypatch):
    import agent.tensorboard as tb

    taken = tmp_path / "events.out.tfevents.0000000001.host.1.0"
    taken.write_bytes(b"someone else's")
    names = iter([taken.name, taken.name, "events.out.tfevents.0000000001.host.1.2"])
    monkeypatch.setattr(tb, "_event_file_name", lambda: next(names))
    with EventWriter(tmp_path) as w:
        w.add_scalars(1, {"x": 1.0})
    assert taken.read_bytes() == b"someone else's"
    assert os.path.basename(w.path) == "events.out.tfevents.0000000001.host.1.2"
    assert len(read_events(w.path)) == 2


def test_first_record_is_the_file_version(tmp_path):
    with EventWriter(tmp_path / "new" / "nested") as w:  # creates the directories
        pass
    events = read_events(w.path)
    assert len(events) == 1
    assert events[0]["file_version"] == "brain.Event:2"
    assert events[0]["step"] == 0 and events[0]["scalars"] == {}
    assert events[0]["wall_time"] > 1_600_000_000


def test_round_trip(tmp_path):
    path = write_steps(tmp_path)
    events = read_events(path)
    assert len(events) == 1 + len(STEPS)
    for i, ((step, values), event) in enumerate(zip(STEPS, events[1:])):
        assert event["file_version"] is None
        assert event["step"] == step
        assert event["wall_time"] == 1_700_000_000.0 + i * 0.25  # a double: exact
        assert event["scalars"] == {tag: f32(v) for tag, v in values.items()}
        assert list(event["scalars"]) == list(values)  # order kept
    assert math.copysign(1.0, events[-1]["scalars"]["loss"]) == -1.0  # -0.0 kept


def test_non_finite_values_round_trip(tmp_path):
    with EventWriter(tmp_path) as w:
        w.add_scalars(7, {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "big": 1e300})
    (event,) = read_events(w.path)[1:]
    assert math.isnan(event["scalars"]["nan"])
    assert event["scalars"]["inf"] == math.inf and event["scalars"]["-inf"] == -math.inf
    assert event["scalars"]["big"] == math.inf  # beyond float32: rounds to inf, as a cast does


def test_accepts_numpy_and_torch_numbers(tmp_path):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    with EventWriter(tmp_path) as w:
        w.add_scalars(np.int64(5), {"a": np.float32(0.25), "b": torch.tensor(1.5), "c": 2})
    (event,) = read_events(w.path)[1:]
    assert event["step"] == 5 and event["scalars"] == {"a": 0.25, "b": 1.5, "c": 2.0}


def test_bad_arguments(tmp_path):
    with EventWriter(tmp_path) as w:
        with pytest.raises(TypeError):
            w.add_scalars(1.5, {"x": 1.0})
        with pytest.raises(TypeError):
            w.add_scalars(True, {"x": 1.0})
        with pytest.raises(ValueError, match="int64"):
            w.add_scalars(2**63, {"x": 1.0})
        with pytest.raises(ValueError, match="tags"):
            w.add_scalars(1, {"": 1.0})
        with pytest.raises(ValueError):
            w.add_scalars(1, {"x": "not a number"})
        w.add_scalars(1, {})  # writes nothing
    assert len(read_events(w.path)) == 1
    with pytest.raises(ValueError, match="flush_every"):
        EventWriter(tmp_path, flush_every=0)


def test_close_is_idempotent_and_final(tmp_path):
    w = EventWriter(tmp_path)
    w.close()
    w.close()
    assert w.closed
    with pytest.raises(ValueError, match="closed"):
        w.add_scalars(1, {"x": 1.0})


def test_each_record_is_flushed_as_written(tmp_path):
    w = EventWriter(tmp_path)
    try:
        w.add_scalars(1, {"x": 1.0})
        # Read through another handle while the writer is still open (as after a crash).
        assert [e["scalars"] for e in read_events(w.path)] == [{}, {"x": 1.0}]
    finally:
        w.close()


def test_flush_every_batches_flushes(tmp_path):
    w = EventWriter(tmp_path, flush_every=3)
    try:
        w.add_scalars(1, {"x": 1.0})
        w.add_scalars(2, {"x": 2.0})
        assert len(read_events(w.path)) == 1  # still in the file buffer
        w.add_scalars(3, {"x": 3.0})
        assert len(read_events(w.path)) == 4
    finally:
        w.close()


def test_flipped_byte_raises_naming_the_offset(tmp_path):
    path = write_steps(tmp_path)
    data = bytearray(Path(path).read_bytes())
    first_len = struct.unpack("<Q", data[:8])[0]
    second = 8 + 4 + first_len + 4  # byte offset of the second record
    for where, what in [
        (second + 12 + 3, "data CRC"),  # inside the second record's data
        (second + 2, "length CRC"),  # inside its length
        (len(data) - 1, "data CRC"),  # the last record's data CRC itself
    ]:
        bad = bytearray(data)
        bad[where] ^= 0x40
        Path(path).write_bytes(bad)
        expected_offset = second if where < len(data) - 1 else None
        with pytest.raises(ValueError, match=what) as info:
            read_events(path)
        if expected_offset is not None:
            assert f"byte offset {expected_offset}" in str(info.value)
        else:
            assert re.search(r"byte offset \d+", str(info.value))


def test_truncated_tail_raises(tmp_path):
    path = write_steps(tmp_path)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_events(path)


# --- Cross-checks against TensorBoard's own readers (skipped without tensorboard) ------------


def test_tensorboard_event_accumulator_reads_it(tmp_path):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    # Steps in increasing order: how the accumulator treats a step going backwards (a restart)
    # is its own policy, not part of the file format.
    steps = STEPS[:-1] + [(2**41, {"loss": math.nan, "reward/mean": math.inf})]
    write_steps(tmp_path, steps)
    acc = ea_mod.EventAccumulator(str(tmp_path), size_guidance={ea_mod.SCALARS: 0})
    acc.Reload()
    assert acc.file_version == 2.0
    assert sorted(acc.Tags()["scalars"]) == ["epsilon", "loss", "lr", "reward/mean"]
    for tag in ["epsilon", "loss", "lr", "reward/mean"]:
        expected = [
            (1_700_000_000.0 + i * 0.25, step, f32(values[tag]))
            for i, (step, values) in enumerate(steps)
            if tag in values
        ]
        got = [(e.wall_time, e.step, e.value) for e in acc.Scalars(tag)]
        assert len(got) == len(expected), tag
        for (gw, gs, gv), (ew, es, ev) in zip(got, expected):
            assert (gw, gs) == (ew, es)
            assert (math.isnan(gv) and math.isnan(ev)) or gv == ev, (tag, gs, gv, ev)


def test_tensorboard_event_file_loader_reads_it(tmp_path):
    loader_mod = pytest.importorskip("tensorboard.backend.event_processing.event_file_loader")
    tensor_util = pytest.importorskip("tensorboard.util.tensor_util")
    path = write_steps(tmp_path, STEPS + [(9, {"nan": math.nan})])

    # The raw Event protos, as TensorBoard's protobuf classes parse them.
    raw = list(loader_mod.LegacyEventFileLoader(path).Load())
    assert raw[0].file_version == "brain.Event:2"
    assert raw[0].source_metadata.writer == "agent.tensorboard"
    assert len(raw) == 1 + len(STEPS) + 1
    for (step, values), event in zip(STEPS, raw[1:]):
        assert event.step == step and event.WhichOneof("what") == "summary"
        got = {v.tag: v.simple_value for v in event.summary.value}
        assert got == {tag: f32(v) for tag, v in values.items()}
    assert math.isnan(raw[-1].summary.value[0].simple_value)
    assert [e.SerializeToString() for e in raw] == _our_records(path)  # byte-identical encoding

    # Through the read-time compat layers TensorBoard applies before plotting: simple_value
    # becomes a float32 scalar tensor tagged for the scalars plugin.
    migrated = [e for e in loader_mod.EventFileLoader(path).Load() if e.HasField("summary")]
    assert len(migrated) == len(STEPS) + 1
    for (step, values), event in zip(STEPS, migrated):
        assert event.step == step
        for v in event.summary.value:
            assert v.WhichOneof("value") == "tensor"
            assert float(tensor_util.make_ndarray(v.tensor)) == f32(values[v.tag])
    first = migrated[0].summary.value[0]
    assert first.metadata.plugin_data.plugin_name == "scalars"


def _our_records(path) -> list[bytes]:
    """The raw record payloads of an event file (framing already checked by read_events)."""
    read_events(path)
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        out.append(data[pos + 12 : pos + 12 + length])
        pos += 12 + length + 4
    return out
