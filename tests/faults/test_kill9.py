"""kill -9 at random moments during training never loses a user's work.

A loop of real `atari-agent train` processes (tiny config, frequent checkpoints), each killed
with SIGKILL at a seeded random moment: a random delay after its first row, the moment a
checkpoint or replay snapshot is being written, just after a checkpoint is renamed into place
(before index.json catches up), or during start-up. After every kill: every checkpoint under a
final name loads, config.toml / index.json / status.json parse, metrics.jsonl has no corrupt line
before its last; the next `--resume` starts from the newest complete checkpoint, removes the dead
writer's temp files and cuts a partial metrics line; the steps lost are at most one checkpoint
interval. A last `--resume` runs to completion.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from agent import checkpoint, files
from agent.checkpoint import CheckpointError, CheckpointStore
from agent.report import Reporter
from agent.runs import list_runs
from agent.tensorboard import read_events

CHECKPOINT_EVERY = 50
TINY = ["--game", "breakout", "--learning-starts", "64", "--capacity", "1000",
        "--check-every", "10", "--report-seconds", "0.05",
        "--checkpoint-every", str(CHECKPOINT_EVERY), "--eval-every", "0", "--threads", "1",
        "--probe-size", "8", "--diag-batch", "32", "--keep-last", "2"]
BUDGET = 10_000_000  # never reached: every process of the loop is killed
TEMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")  # agent.checkpoint.atomic_write's
STRATEGIES = ("random", "mid-write", "after-rename", "start-up")
WEIGHTS = (4, 4, 2, 1)
START_TIMEOUT = 60.0  # a loaded CI machine: torch's import alone takes seconds


@dataclass
class Tally:
    """What the kills hit, for the summary line (and for asserting the loop covered them)."""

    kills: int = 0
    by_strategy: dict[str, int] = field(default_factory=dict)
    mid_write: int = 0  # a temp checkpoint / replay snapshot of the killed writer was left
    index_behind: int = 0  # a complete ckpt-*.pt that index.json did not list yet
    partial_metrics: int = 0  # metrics.jsonl ended in a partial line (the kill's, or torn here)
    torn: int = 0  # partial lines appended here, as a kill inside a split write() would leave
    max_lost: int = 0


# ------------------------------------------------------------------------------ processes
def _start(run: Path, log: Path, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "agent.cli", "train", *args],
                                stdout=out, stderr=subprocess.STDOUT, cwd=run.parent, env=env)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL exactly this child (never by name) and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _wait_for(proc: subprocess.Popen, log: Path, what: str, ready, timeout: float = START_TIMEOUT,
              poll: float = 0.002) -> None:
    """Poll `ready()` until true; fail with the child's output if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"train exited with {proc.returncode} while waiting for {what}:\n"
                        f"{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            _kill(proc)
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(poll)


def _temps(directory: Path) -> list[tuple[str, int]]:
    """(target name, writer pid) of atomic_write temp files in `directory`."""
    out = []
    for name in os.listdir(directory) if directory.is_dir() else []:
        m = TEMP.match(name)
        if m:
            out.append((m["name"], int(m["pid"])))
    return out


def _steps_of(name: str) -> int:
    return int(name.split("-")[1].split(".")[0])


# ------------------------------------------------------------------------------ checks
def _check_after_kill(run: Path, pid: int, tally: Tally) -> tuple[Path | None, int]:
    """Everything a killed run leaves must be usable; returns (newest complete checkpoint, the
    step the killed process is known to have reached)."""
    ckdir = run / "checkpoints"
    reached = 0
    temps = _temps(ckdir)
    if any(p == pid and not n.startswith(("index", "best")) for n, p in temps):
        tally.mid_write += 1
    # a checkpoint being written when the kill came: that step had been reached
    reached = max([reached] + [_steps_of(n) for n, p in temps
                               if p == pid and n.startswith(("ckpt-", "replay-"))])

    # every file under a final checkpoint name loads, and holds the steps its name says
    newest: tuple[int, Path] | None = None
    for path in sorted(ckdir.glob("ckpt-*.pt")):
        saved = checkpoint.load(path)  # raises CheckpointError on a half-written file
        steps = int(saved["counters"]["steps"])
        assert steps == _steps_of(path.name), path
        assert steps % CHECKPOINT_EVERY == 0, path
        if newest is None or steps > newest[0]:
            newest = (steps, path)
    if (ckdir / "best.pt").exists():
        checkpoint.load(ckdir / "best.pt")
    if newest is not None:
        replay_file = checkpoint.load(newest[1]).get("replay_file")
        if replay_file:  # the snapshot a checkpoint names is written before it, kept with it
            assert checkpoint.load_arrays(ckdir / replay_file)

    # the run's small files always parse
    config = tomllib.loads((run / "config.toml").read_text())
    assert config["run"]["checkpoint_every"] == CHECKPOINT_EVERY
    if (ckdir / "index.json").exists():
        index = json.loads((ckdir / "index.json").read_text())
        listed = {e["file"] for e in index["checkpoints"]}
        if any(p.name not in listed for p in ckdir.glob("ckpt-*.pt")):
            tally.index_behind += 1
    if (run / "status.json").exists():
        status = json.loads((run / "status.json").read_text())
        reached = max(reached, int(status["steps"]))

    # metrics.jsonl: complete lines parse; only the last may be cut short by the kill
    data = (run / "metrics.jsonl").read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    rows = [json.loads(line) for line in lines]  # a glued or corrupt line fails here
    if tail:
        tally.partial_metrics += 1
    if rows and isinstance(rows[-1].get("steps"), int):
        reached = max(reached, rows[-1]["steps"])

    # TensorBoard: one event file per process, each record one write(): only a torn last record
    # (what TensorBoard reads as "not written yet") would be acceptable
    for events in run.glob("events.out.tfevents.*"):
        try:
            read_events(events)
        except ValueError as exc:
            assert "truncated" in str(exc), exc

    # `atari-agent runs` does not call a killed run "running"
    assert [r["state"] for r in list_runs(run.parent)] == ["died"]
    return (None if newest is None else newest[1]), reached


def _complete_lines(path: Path) -> bytes:
    """metrics.jsonl up to and with its last newline (what a restart must leave untouched)."""
    data = path.read_bytes() if path.exists() else b""
    return data[:data.rfind(b"\n") + 1]


def _check_resumed(run: Path, proc: subprocess.Popen, log: Path, expected: Path,
                   before: bytes) -> None:
    """The new process resumed from `expected` and cleaned up after the dead one; `before` is
    the complete lines of metrics.jsonl when it started."""
    text = log.read_text()
    assert f"resuming {run} from {expected.name}" in text, text[-2000:]
    data = (run / "metrics.jsonl").read_bytes()
    # the old lines are kept; a partial last line was cut, so nothing is glued onto it
    assert data.startswith(before)
    appended = data[len(before):data.rfind(b"\n") + 1]
    new = [json.loads(line) for line in appended.split(b"\n") if line]
    resumes = [r for r in new if r.get("event") == "resume"]
    steps = _steps_of(expected.name)  # (checked against the file; it may be pruned by now)
    assert resumes and resumes[-1]["checkpoint"] == expected.name
    assert resumes[-1]["steps"] == steps
    after = [r for r in new[new.index(resumes[-1]):] if "event" not in r]
    assert all(r["steps"] >= steps for r in after)
    # the dead writers' temp files are gone (the live process's own may be in flight)
    for directory in (run, run / "checkpoints"):
        assert all(p == proc.pid for _, p in _temps(directory)), _temps(directory)


def _wait_for_first_row(proc: subprocess.Popen, log: Path) -> None:
    _wait_for(proc, log, "the first row", lambda: "Steps" in log.read_text())


def _wait_for_checkpoint(proc: subprocess.Popen, log: Path, run: Path) -> None:
    _wait_for(proc, log, "the first checkpoint",
              lambda: any((run / "checkpoints").glob("ckpt-*.pt")))


def _wait_for_moment(proc: subprocess.Popen, log: Path, run: Path, strategy: str,
                     rng: random.Random) -> None:
    """Return at the moment `strategy` kills at."""
    if strategy == "random":
        time.sleep(rng.uniform(0.0, 1.0))
        return
    if strategy == "start-up":  # anywhere in imports, config.toml, the store, the resume
        time.sleep(rng.uniform(0.5, 3.0))
        return

    def writing() -> bool:
        return any(p == proc.pid and n.startswith(("ckpt-", "replay-"))
                   for n, p in _temps(run / "checkpoints"))

    _wait_for(proc, log, "a checkpoint write", writing)
    if strategy == "mid-write":
        time.sleep(rng.uniform(0.0, 0.01))  # a 24 MB write + fsync: tens of ms
    else:  # just renamed into place: the directory fsync, pruning and index.json follow
        _wait_for(proc, log, "the rename", lambda: not writing(), poll=0.0005)


# ------------------------------------------------------------------------------ the loop
def _kill_loop(tmp_path: Path, seed: int, kills: int, replay_from: int,
               order: tuple[str, ...] = ()) -> Tally:
    """`kills` runs killed at seeded moments; `order` names the strategies of kills 1.. (the
    first is always "random": there is nothing to resume before it), else they are drawn."""
    rng = random.Random(seed)
    run = tmp_path / "k9"
    tally = Tally()
    proc: subprocess.Popen | None = None
    try:
        expected: Path | None = None
        for i in range(kills):
            log = tmp_path / f"train-{i}.log"
            replay = ["--save-replay" if i >= replay_from else "--no-save-replay"]
            if i == 0:
                args = [*TINY, "--runs-dir", str(tmp_path), "--name", run.name]
            else:
                args = ["--resume", str(run)]
            before = _complete_lines(run / "metrics.jsonl")
            proc = _start(run, log, [*args, "--total-steps", str(BUDGET), *replay])
            strategy = ("random" if i == 0 else order[i - 1] if order
                        else rng.choices(STRATEGIES, WEIGHTS)[0])
            if strategy != "start-up":
                _wait_for_first_row(proc, log)  # started, resumed, training
                if expected is not None:
                    _check_resumed(run, proc, log, expected, before)
            if i == 0:  # nothing to resume from before the first checkpoint
                _wait_for_checkpoint(proc, log, run)
            pid = proc.pid
            _wait_for_moment(proc, log, run, strategy, rng)
            _kill(proc)
            tally.kills += 1
            tally.by_strategy[strategy] = tally.by_strategy.get(strategy, 0) + 1

            newest, reached = _check_after_kill(run, pid, tally)
            assert newest is not None, "the first kill came after the first checkpoint"
            lost = reached - _steps_of(newest.name)
            assert lost <= CHECKPOINT_EVERY, (i, strategy, reached, newest.name)
            tally.max_lost = max(tally.max_lost, lost)
            expected = newest
            # A kill -9 tears a metrics line only if the line's write() was split, which one
            # flushed ~700-byte line practically never is: tear some here, so the repair on
            # the next start is exercised end to end.
            if rng.random() < 0.2 and (run / "metrics.jsonl").read_bytes().endswith(b"\n"):
                with open(run / "metrics.jsonl", "ab") as f:
                    f.write(b'{"time": 1795709031.2, "steps": 12')
                tally.torn += 1

        # the last resume runs to completion and exits 0
        steps = _steps_of(expected.name)
        log = tmp_path / "train-final.log"
        before = _complete_lines(run / "metrics.jsonl")
        proc = _start(run, log, ["--resume", str(run), "--total-steps", str(steps + 60)])
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
        _check_resumed(run, proc, log, expected, before)
        final = CheckpointStore(run).latest()
        assert checkpoint.load(final)["counters"]["steps"] == steps + 60
        assert not _temps(run) and not _temps(run / "checkpoints")
        assert json.loads((run / "status.json").read_text())["state"] == "finished"
    finally:
        if proc is not None:
            _kill(proc)
    print(f"\nkill -9 loop (seed {seed}): {tally}")
    return tally


def test_kill9_at_each_kind_of_moment_never_loses_work(tmp_path):
    """The default run's twin of the 20-kill loop: each strategy once (mid-write twice, with
    and without a replay snapshot), then the final resume."""
    order = ("mid-write", "after-rename", "start-up", "mid-write")
    tally = _kill_loop(tmp_path, seed=20240611, kills=5, replay_from=4, order=order)
    assert tally.kills == 5 and set(tally.by_strategy) == set(STRATEGIES), tally
    assert tally.mid_write >= 1, tally  # a kill did land mid-checkpoint-write


@pytest.mark.slow
def test_kill9_during_training_never_loses_work(tmp_path):
    tally = _kill_loop(tmp_path, seed=20240611, kills=20, replay_from=14)
    assert tally.kills >= 20
    assert tally.mid_write >= 2, tally  # the loop does exercise kills mid-checkpoint-write


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_kill9_long(tmp_path, seed):
    _kill_loop(tmp_path, seed=seed, kills=60, replay_from=30)


# ------------------------------------------------------------------------------ focused tests
def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temp_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save({"counters": {"steps": 50}}, 50, healthy=True)
    dead, live = _dead_pid(), os.getpid()
    stale = [store.dir / f".ckpt-000000000100.pt.tmp-{dead}",
             store.dir / f".replay-000000000100.npz.tmp-{dead}",
             tmp_path / f".status.json.tmp-{dead}", tmp_path / f".config.toml.tmp-{dead}"]
    kept = [store.dir / f".ckpt-000000000150.pt.tmp-{live}", tmp_path / f".status.json.tmp-{live}",
            store.dir / "notes.tmp-x", tmp_path / ".hidden"]
    for path in stale + kept:
        path.write_bytes(b"half a file")
    again = CheckpointStore(tmp_path)
    assert not [p for p in stale if p.exists()]
    assert all(p.exists() for p in kept)  # a live writer's file, and files not ours
    assert again.latest().name == "ckpt-000000000050.pt"


def test_a_checkpoint_renamed_before_index_json_was_written_is_resumed(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=2)
    for steps in (50, 100):
        store.save({"counters": {"steps": steps}}, steps, healthy=True,
                   replay={"frames": np.full(4, steps, np.uint8)})
    index = (store.dir / "index.json").read_bytes()
    store.save({"counters": {"steps": 150}}, 150, healthy=True,
               replay={"frames": np.full(4, 150, np.uint8)})
    # killed after the rename and the pruning, before index.json: the index on disk is behind
    (store.dir / "index.json").write_bytes(index)
    again = CheckpointStore(tmp_path, keep_last=2)
    assert again.latest().name == "ckpt-000000000150.pt"
    saved = checkpoint.load(again.latest())
    assert checkpoint.load_arrays(store.dir / saved["replay_file"])["frames"][0] == 150
    again.save({"counters": {"steps": 200}}, 200, healthy=True)
    assert [e["steps"] for e in again.entries] == [150, 200]  # pruned as usual from there
    assert sorted(p.name for p in store.dir.glob("ckpt-*.pt")) == [
        "ckpt-000000000150.pt", "ckpt-000000000200.pt"]


def test_a_partial_last_metrics_line_is_cut_before_appending(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"event": "resume", "steps": 1}\n{"steps": 2, "loss": 0.5}\n{"steps": 3, "lo')
    rep = Reporter(tmp_path, total_steps=10, out=io.StringIO(), tensorboard=False)
    rep.event("resume", "resumed", steps=2)
    rep.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["steps"] for r in rows] == [1, 2, 2] and path.read_text().endswith("\n")
    # a file that is nothing but a partial line, and one that is complete, stay appendable
    path.write_text('{"steps": 1, "lo')
    Reporter(tmp_path, total_steps=10, out=io.StringIO(), tensorboard=False).close()
    assert path.read_text() == ""
    path.write_text('{"steps": 1}\n')
    Reporter(tmp_path, total_steps=10, out=io.StringIO(), tensorboard=False).close()
    assert path.read_text() == '{"steps": 1}\n'


def test_a_failed_config_write_leaves_the_previous_config_whole(tmp_path, monkeypatch):
    from agent.config import Config
    from agent.train import Trainer

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("[run]\ntotal_steps = 7\n")
    config = Config().replace(env={"game": "breakout"}, learner={"threads": 1},
                              replay={"capacity": 1000})

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)  # the first fsync: config.toml's
    with pytest.raises(CheckpointError, match="config.toml"):
        Trainer(config, run, out=io.StringIO(), tensorboard=False)
    monkeypatch.undo()
    assert (run / "config.toml").read_text() == "[run]\ntotal_steps = 7\n"
    assert not _temps(run)


def test_runs_lists_a_run_whose_process_died_as_died(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.toml").write_text("")
    status = {"updated": time.time(), "state": "running", "game": "pong", "steps": 5}
    (run / "status.json").write_text(json.dumps({**status, "pid": _dead_pid()}))
    assert list_runs(tmp_path)[0]["state"] == "died"
    (run / "status.json").write_text(json.dumps({**status, "pid": os.getpid()}))
    assert list_runs(tmp_path)[0]["state"] == "running"


def test_the_helpers_of_this_file():
    assert TEMP.match(".ckpt-000000000100.pt.tmp-123")["name"] == "ckpt-000000000100.pt"
    assert _steps_of("replay-000000000150.npz") == 150
    with pytest.raises(CheckpointError):
        checkpoint.load(Path("/nonexistent/ckpt-000000000050.pt"))
