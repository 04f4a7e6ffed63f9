"""A full disk during a checkpoint write: a clear error, the previous checkpoint intact and
loadable, no temp file or orphan replay snapshot, and the run stops cleanly (state "failed", exit
4) or trains on and retries, as run.on_save_error says.

Injected faults stand in for `open` in agent.checkpoint (every atomic write: checkpoints, replay
snapshots, index.json, status.json) or agent.report (metrics.jsonl): the chosen writes put a few
bytes on disk and then raise ENOSPC, as a full disk does. The real fault is a size-limited tmpfs
(we run as root; skipped where mount is not permitted) that the first checkpoint fits and the
next one does not, driven through the `atari-agent train` command.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from agent import checkpoint, files, report
from agent.checkpoint import CheckpointStore
from agent.cli import TRAIN_EXIT_CODES, build_parser, main
from agent.cli import _config as cli_config
from agent.report import ROW_KEYS, Reporter
from tests.test_train import toy_config, toy_trainer

NO_SPACE = "[Errno 28] No space left on device"


# ------------------------------------------------------------------------------ the injector
def _kind(name: str) -> str:
    """ckpt, replay, index, best, status, metrics... of a file name or its atomic temp name."""
    name = re.sub(r"\.tmp-\d+$", "", name.lstrip("."))
    return re.split(r"[-.]", name, maxsplit=1)[0]


class _FullFile:
    """A file on a disk with `room` bytes free: a write past them writes what fits, then
    raises ENOSPC (flush, fsync, close, tell... are the real file's)."""

    def __init__(self, file, room: int):
        self._file = file
        self._room = room

    def write(self, data):
        n = min(len(data), self._room)
        if n:
            self._file.write(data[:n])
            self._room -= n
        if n < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return n

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


class FullDisk:
    """Stands in for `open` in a module: a file opened for writing whose kind and count
    (1 for the first file of that kind) `fails(kind, n)` picks is a `_FullFile`."""

    def __init__(self, fails: Callable[[str, int], bool], room: int = 100):
        self.fails = fails
        self.room = room
        self.opened: Counter[str] = Counter()
        self.failed: list[str] = []

    def __call__(self, file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        if not any(c in mode for c in "wax+"):
            return f
        kind = _kind(Path(file).name)
        self.opened[kind] += 1
        if not self.fails(kind, self.opened[kind]):
            return f
        self.failed.append(Path(file).name)
        return _FullFile(f, self.room)


def full_disk(monkeypatch, module, fails, room: int = 100) -> FullDisk:
    disk = FullDisk(fails, room)
    monkeypatch.setattr(module, "open", disk, raising=False)
    return disk


def trainer_of(tmp_path, name="run", **run):
    """The FIRE-game trainer of tests/test_train.py: a checkpoint every 200 steps, an update
    every 4 (fast)."""
    return toy_trainer(tmp_path, name, learner={"train_freq": 4},
                       run={"checkpoint_every": 200, **run})


def ckpt(steps: int) -> str:
    return f"ckpt-{steps:012d}.pt"


def events(run_dir: Path, name: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("event") == name]


def keep_copies(trainer) -> dict[str, bytes]:
    """The bytes of each checkpoint right after it was written: {file name: bytes}."""
    saved: dict[str, bytes] = {}
    real = trainer.save

    def save():
        path = real()
        saved[path.name] = path.read_bytes()
        return path

    trainer.save = save
    return saved


def assert_clean(run_dir: Path, files: list[str]) -> None:
    """Exactly `files` (and index.json) in checkpoints/: no temp file, no orphan snapshot; the
    index lists the checkpoints among them, and a fresh store picks the newest to resume."""
    cdir = run_dir / "checkpoints"
    assert sorted(p.name for p in cdir.iterdir()) == sorted([*files, "index.json"])
    index = json.loads((cdir / "index.json").read_text())
    listed = sorted(e["file"] for e in index["checkpoints"])
    assert listed == sorted(f for f in files if f.startswith("ckpt-"))
    assert CheckpointStore(run_dir).latest().name == listed[-1]
    assert not list(run_dir.glob(".*.tmp-*"))


# ------------------------------------------------------------------------------ stop
def test_stop_ends_the_run_cleanly_with_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    trainer = trainer_of(tmp_path, total_steps=800)
    assert trainer.config.run.on_save_error == "stop"  # the default
    saved = keep_copies(trainer)
    disk = full_disk(monkeypatch, files, lambda kind, n: kind == "ckpt" and n >= 2)
    result = trainer.run()

    assert (result.state, result.steps) == ("failed", 400)
    assert result.checkpoint == tmp_path / "run" / "checkpoints" / ckpt(200)
    assert NO_SPACE in result.error and ckpt(400) in result.error and ckpt(200) in result.error
    assert "--resume" in result.error
    assert disk.opened["ckpt"] == 2, "no further checkpoint write on the way out"
    # the event row: which file, the OS error, what happens next
    [row] = events(result.run_dir, "save_failed")
    assert (row["file"], row["error"], row["action"], row["failures"], row["checkpoint"]) == (
        ckpt(400), NO_SPACE, "stop", 1, ckpt(200))
    assert row["steps"] == 400 and "the run stops" in row["message"]
    # the previous checkpoint: byte for byte what was written, and it loads and resumes
    assert_clean(result.run_dir, [ckpt(200)])
    assert result.checkpoint.read_bytes() == saved[ckpt(200)]
    assert checkpoint.load(result.checkpoint)["counters"]["steps"] == 200
    status = json.loads((result.run_dir / "status.json").read_text())
    assert (status["state"], status["checkpoint"], status["steps"]) == ("failed", ckpt(200), 400)
    assert NO_SPACE in status["error"]
    monkeypatch.undo()
    again = trainer_of(tmp_path, total_steps=800)
    again.restore(CheckpointStore(result.run_dir).latest())
    assert again.steps == 200


def test_a_failed_first_checkpoint_says_there_is_none_to_resume(tmp_path, monkeypatch):
    trainer = trainer_of(tmp_path, total_steps=400)
    full_disk(monkeypatch, files, lambda kind, n: kind == "ckpt")
    result = trainer.run()
    assert (result.state, result.steps, result.checkpoint) == ("failed", 200, None)
    assert NO_SPACE in result.error and "no checkpoint was written yet" in result.error
    assert sorted(p.name for p in (result.run_dir / "checkpoints").iterdir()) == []


def test_the_replay_snapshot_of_a_failed_checkpoint_is_deleted(tmp_path, monkeypatch):
    trainer = trainer_of(tmp_path, total_steps=800, save_replay=True)
    full_disk(monkeypatch, files, lambda kind, n: kind == "ckpt" and n == 2)
    result = trainer.run()
    assert result.state == "failed"
    # replay-400 was written whole, then ckpt-400 failed: the orphan is gone, replay-200 stays
    assert_clean(result.run_dir, [ckpt(200), "replay-000000000200.npz"])
    saved = checkpoint.load(result.checkpoint)
    assert saved["replay_file"] == "replay-000000000200.npz"
    assert len(checkpoint.load_arrays(result.checkpoint.parent / saved["replay_file"]))


@pytest.mark.parametrize("kind", ["replay", "index"])
def test_a_failed_snapshot_or_index_write_keeps_every_earlier_file(tmp_path, monkeypatch, kind):
    # keep_last 1: a save that pruned before its index was on disk would lose ckpt-200
    trainer = trainer_of(tmp_path, total_steps=800, save_replay=True, keep_last=1)
    saved = keep_copies(trainer)
    full_disk(monkeypatch, files, lambda k, n: k == kind and n == 2)
    result = trainer.run()
    assert result.state == "failed" and result.checkpoint.name == ckpt(200)
    [row] = events(result.run_dir, "save_failed")
    assert row["file"] == ("index.json" if kind == "index" else "replay-000000000400.npz")
    assert row["error"] == NO_SPACE
    assert_clean(result.run_dir, [ckpt(200), "replay-000000000200.npz"])
    assert result.checkpoint.read_bytes() == saved[ckpt(200)]


# ------------------------------------------------------------------------------ continue
def test_continue_retries_and_a_good_save_clears_the_count(tmp_path, monkeypatch):
    # two failures, but never two in a row: max_save_failures 2 is not reached
    trainer = trainer_of(tmp_path, total_steps=1000, on_save_error="continue",
                         max_save_failures=2, keep_last=10)
    disk = full_disk(monkeypatch, files, lambda kind, n: kind == "ckpt" and n in (2, 4))
    result = trainer.run()
    assert (result.state, result.steps, result.error) == ("finished", 1000, None)
    rows = events(result.run_dir, "save_failed")
    assert [(r["steps"], r["file"], r["action"], r["failures"]) for r in rows] == [
        (400, ckpt(400), "continue", 1), (800, ckpt(800), "continue", 1)]
    assert "tries again at step 600" in rows[0]["message"]
    assert trainer.save_failures == 0
    assert_clean(result.run_dir, [ckpt(200), ckpt(600), ckpt(1000)])
    assert result.checkpoint.name == ckpt(1000)
    assert disk.failed == [f".{ckpt(400)}.tmp-{os.getpid()}", f".{ckpt(800)}.tmp-{os.getpid()}"]


def test_continue_stops_anyway_when_the_disk_stays_full(tmp_path, monkeypatch):
    trainer = trainer_of(tmp_path, total_steps=1400, on_save_error="continue", max_save_failures=3)
    disk = full_disk(monkeypatch, files, lambda kind, n: kind == "ckpt" and n >= 2)
    result = trainer.run()
    assert (result.state, result.steps) == ("failed", 800)
    rows = events(result.run_dir, "save_failed")
    assert [(r["steps"], r["action"], r["failures"]) for r in rows] == [
        (400, "continue", 1), (600, "continue", 2), (800, "stop", 3)]
    assert "3 checkpoint writes failed in a row" in rows[-1]["message"]
    assert disk.opened["ckpt"] == 4
    assert_clean(result.run_dir, [ckpt(200)])
    assert result.checkpoint.name == ckpt(200)


@pytest.mark.parametrize("stop_after", [None, 450])
def test_a_failed_last_save_fails_the_run_even_with_continue(tmp_path, monkeypatch, stop_after):
    # the end of the run (finished, or interrupted: the Ctrl-C path) has no later interval
    trainer = trainer_of(tmp_path, total_steps=500, on_save_error="continue")
    full_disk(monkeypatch, files, lambda kind, n: kind == "ckpt" and n == 3)
    result = trainer.run(stop_after=stop_after)
    assert (result.state, result.steps) == ("failed", stop_after or 500)
    [row] = events(result.run_dir, "save_failed")
    assert row["action"] == "stop" and "the run's last save" in row["message"]
    assert_clean(result.run_dir, [ckpt(200), ckpt(400)])
    assert result.checkpoint.name == ckpt(400)


def test_without_failures_the_ctrl_c_path_is_unchanged(tmp_path):
    trainer = trainer_of(tmp_path, total_steps=500)
    result = trainer.run(stop_after=300)
    assert (result.state, result.checkpoint.name, result.error) == ("interrupted", ckpt(300),
                                                                    None)
    assert not events(result.run_dir, "save_failed")


# ------------------------------------------------------------------------------ status, metrics
def test_status_and_metrics_write_failures_are_said_once_and_skipped(tmp_path, monkeypatch):
    out = io.StringIO()
    config = toy_config(learner={"train_freq": 4},
                        run={"total_steps": 400, "checkpoint_every": 200, "report_seconds": 1e-9})
    # every status.json write fails; metrics.jsonl runs out of room mid-line once (its first
    # opening), then the file is reopened and has room again
    full_disk(monkeypatch, files, lambda kind, n: kind == "status")
    full_disk(monkeypatch, report, lambda kind, n: kind == "metrics" and n == 1, room=5_000)
    from agent.train import Trainer
    from tests.toygame import make_fire_game

    result = Trainer(config, tmp_path / "run", make_env=make_fire_game, tensorboard=False,
                     out=out).run()
    assert result.state == "finished" and result.checkpoint.name == ckpt(400)
    said = [line for line in out.getvalue().splitlines() if line.startswith("[write_failed]")]
    assert len(said) == 2, said
    assert "status.json" in said[0] + said[1] and "metrics.jsonl" in said[0] + said[1]
    assert all(NO_SPACE in line for line in said)
    assert not (tmp_path / "run" / "status.json").exists()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line whole: the torn one was cut off
    assert rows[-1]["steps"] == 400
    skipped = set(range(1, 401)) - {r["steps"] for r in rows}
    assert len(skipped) == 1, skipped  # the row that did not fit: skipped, not left torn


def test_a_tensorboard_write_failure_turns_tensorboard_off(tmp_path):
    out = io.StringIO()
    reporter = Reporter(tmp_path, 100, out=out, tensorboard=True)
    reporter._tb._file = _FullFile(reporter._tb._file, room=10)
    for steps in (1, 2, 3):
        reporter.row({**dict.fromkeys(ROW_KEYS), "steps": steps, "sps": 1.0, "epsilon": 1.0,
                      "episodes": 0, "updates": 0, "target_age": 0, "time": 0.0})
    reporter.close()
    said = [line for line in out.getvalue().splitlines() if line.startswith("[write_failed]")]
    assert len(said) == 1 and "TensorBoard" in said[0] and NO_SPACE in said[0]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["steps"] for r in rows] == [1, 2, 3]


# ------------------------------------------------------------------------------ the command
def test_on_save_error_flags(tmp_path, capsys):
    args = build_parser().parse_args(["train", "--on-save-error", "continue",
                                      "--max-save-failures", "5"])
    assert (cli_config(args).run.on_save_error, cli_config(args).run.max_save_failures) == (
        "continue", 5)
    assert main(["train", "--runs-dir", str(tmp_path), "--on-save-error", "sometimes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "run.on_save_error must be one of 'stop', 'continue', got 'sometimes'" in err
    assert main(["train", "--runs-dir", str(tmp_path), "--max-save-failures", "0"]) == 2
    assert "run.max_save_failures" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    assert TRAIN_EXIT_CODES["failed"] == 4


def _statvfs_used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _sh(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


CLI = [sys.executable, "-m", "agent.cli", "train", "--game", "breakout", "--frame-shape", "36,36",
       "--learning-starts", "64", "--capacity", "1000", "--check-every", "10",
       "--report-seconds", "1000", "--checkpoint-every", "100", "--eval-every", "0",
       "--threads", "1", "--probe-size", "8", "--diag-batch", "32", "--keep-last", "5"]


def test_a_real_full_disk_through_the_command(tmp_path):
    """A tmpfs that the first checkpoint fits and the next one does not."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount/umount here")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = _sh("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        first = subprocess.run([*CLI, "--runs-dir", str(disk), "--name", "r",
                                "--total-steps", "100"], capture_output=True, text=True, env=env,
                               timeout=120)
        assert first.returncode == 0, first.stderr
        run = disk / "r"
        good = run / "checkpoints" / ckpt(100)
        before = good.read_bytes()
        # shrink the disk to what is used plus half a checkpoint: ckpt-200 cannot fit
        size = _statvfs_used(disk) + len(before) // 2
        shrunk = _sh("mount", "-o", f"remount,size={size}", str(disk))
        if shrunk.returncode != 0:
            pytest.skip(f"cannot resize the tmpfs: {shrunk.stderr.strip()}")
        second = subprocess.run([*CLI, "--resume", str(run), "--total-steps", "300"],
                                capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == TRAIN_EXIT_CODES["failed"] == 4, second.stderr
        assert "Traceback" not in second.stderr + second.stdout
        err = second.stderr.strip().splitlines()
        assert len(err) == 1, second.stderr
        assert "No space left on device" in err[0] and ckpt(200) in err[0]
        assert ckpt(100) in err[0] and "--resume" in err[0]
        assert "[save_failed]" in second.stdout and "No space left on device" in second.stdout
        assert good.read_bytes() == before
        assert checkpoint.load(good)["counters"]["steps"] == 100
        assert_clean(run, [ckpt(100)])
        assert CheckpointStore(run).latest() == good
        status = json.loads((run / "status.json").read_text())
        assert (status["state"], status["checkpoint"]) == ("failed", ckpt(100))
    finally:
        _sh("umount", str(disk))


def test_torch_save_keeps_the_os_error(tmp_path, monkeypatch):
    """torch's zip writer turns a failed write into "unexpected pos ..."; the OS's reason is
    what the message must say."""
    full_disk(monkeypatch, files, lambda kind, n: True, room=1_000)
    with pytest.raises(checkpoint.CheckpointError, match=re.escape(NO_SPACE)):
        checkpoint.save(tmp_path / "c.pt", {"w": torch.zeros(100_000)})
    assert not list(tmp_path.iterdir())
