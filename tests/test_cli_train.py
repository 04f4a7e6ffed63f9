"""`atari-agent train / runs / demo` from the command line: a real ROM, tiny budgets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from agent import checkpoint
from agent.cli import main
from agent.train import TrainResult
from tests.procs import reaped

TINY = ["--game", "breakout", "--learning-starts", "64", "--capacity", "1000",
        "--check-every", "10", "--report-seconds", "0.5", "--checkpoint-every", "100",
        "--eval-every", "0", "--threads", "1", "--probe-size", "8", "--diag-batch", "32"]


def _train(tmp_path, *extra):
    return main(["train", *TINY, "--runs-dir", str(tmp_path), *extra])


def _files(root):
    """Every file and folder under root: its size and modification time (ns)."""
    return {p.relative_to(root): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in [root, *root.rglob("*")]}


def test_train_resume_fresh_and_runs(tmp_path, capsys):
    assert _train(tmp_path, "--name", "r1", "--total-steps", "200") == 0
    run = tmp_path / "r1"
    assert sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.pt")) == [
        "ckpt-000000000100.pt", "ckpt-000000000200.pt"]
    assert "total_steps = 200" in (run / "config.toml").read_text()
    capsys.readouterr()

    # the same name again: refused, naming both ways forward; nothing touched
    assert _train(tmp_path, "--name", "r1", "--total-steps", "200") == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--fresh" in err and err.count("\n") == 1

    # resuming the finished run: it is complete; how to extend it; nothing written or touched
    before = _files(run)
    assert main(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and f"{run} is complete: 200 of 200 steps" in out
    assert f"atari-agent train --resume {run} --total-steps N` with N above 200" in out
    assert _files(run) == before
    assert main(["train", "--resume", str(run), "--total-steps", "150"]) == 0
    assert "complete: 200 steps, more than its total of 150" in capsys.readouterr().out
    assert _files(run) == before

    # resume continues from step 200 with a longer budget given on the command line
    assert main(["train", "--resume", str(run), "--total-steps", "300"]) == 0
    saved = checkpoint.load(run / "checkpoints" / "ckpt-000000000300.pt")
    assert saved["counters"]["steps"] == 300
    rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert any(r.get("event") == "resume" for r in rows)
    capsys.readouterr()

    # --fresh archives the old files and starts from step 0
    assert _train(tmp_path, "--name", "r1", "--total-steps", "100", "--fresh") == 0
    archived = list(run.glob("archive-*/checkpoints/ckpt-000000000300.pt"))
    assert archived, "the previous checkpoints are kept in an archive folder"
    assert checkpoint.load(run / "checkpoints" / "ckpt-000000000100.pt")["counters"][
        "steps"] == 100
    capsys.readouterr()

    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "r1" in out and "breakout" in out and "finished" in out


@pytest.mark.parametrize("args, message", [
    (["--lr", "-1"], "learner.lr must be a number in (0.0, 1.0], got -1.0"),
    (["--game", "pongg"], "pongg"),
    (["--resume", "/nonexistent/run"], "is not a run directory"),
    (["--batch-size", "64", "--capacity", "32"], "must not exceed replay.capacity"),
    pytest.param(["--name", "cudatest", "--device", "cuda"],
                 "learner.device is 'cuda' but CUDA is not available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")),
])
def test_bad_train_arguments_are_one_line(tmp_path, capsys, args, message):
    assert main(["train", "--runs-dir", str(tmp_path), *args]) == 2
    out, err = capsys.readouterr()
    assert message in err and err.count("\n") == 1
    assert "run directory" not in out
    assert not list(tmp_path.iterdir())  # no run directory left behind


@pytest.mark.parametrize("state, steps, episodes, line", [
    ("finished", 1, 1, "finished: 1 step, 1 episode; last checkpoint "),
    ("finished", 2_000, 0, "finished: 2,000 steps, 0 episodes; last checkpoint "),
    ("interrupted", 1, 1, "interrupted: 1 step, 1 episode; saved "),
    ("halted", 5, 0, "halted: 5 steps, 0 episodes; last checkpoint "),
])
def test_the_end_of_run_line_counts_in_words_and_says_how_to_continue(
        tmp_path, capsys, monkeypatch, state, steps, episodes, line):
    def fake_train(config, run_dir, resume_from=None):
        return TrainResult(run_dir, state, steps, episodes, run_dir / "checkpoints" / "c.pt")

    monkeypatch.setattr("agent.train.train", fake_train)
    assert main(["train", "--runs-dir", str(tmp_path / "my runs"), "--name", "r"]) == {
        "finished": 0, "interrupted": 130, "halted": 3}[state]
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(line)
    resume = f"continue it with `atari-agent train --resume '{tmp_path / 'my runs' / 'r'}'`"
    assert (resume in last) == (state == "interrupted")


def test_a_second_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    def aborted_train(config, run_dir, resume_from=None):
        ckpts = run_dir / "checkpoints"
        ckpts.mkdir(parents=True)
        raise KeyboardInterrupt  # what Trainer raises on the second Ctrl-C

    monkeypatch.setattr("agent.train.train", aborted_train)
    assert main(["train", "--runs-dir", str(tmp_path), "--name", "r"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["atari-agent train: aborted by a second Ctrl-C; no checkpoint was saved"]


def test_the_fast_cpu_preset_is_read_and_flags_override_it(tmp_path):
    assert _train(tmp_path, "--preset", "fast-cpu", "--name", "c", "--total-steps", "200",
                  "--learning-starts", "128", "--capacity", "5000") == 0
    text = (tmp_path / "c" / "config.toml").read_text()
    for line in ("terminal_on_life_loss = true", "target_update = 250", "envs = 1",
                 "eps_decay_steps = 40000", "eval_episodes = 10", "dueling = true",
                 "prioritized = true",
                 # flags over the preset's 10,000, 100,000 and 50,000 (TINY's --eval-every 0)
                 "learning_starts = 128", "capacity = 5000", "eval_every = 0"):
        assert line in text, line


def test_a_run_directory_in_use_by_another_trainer_is_refused_untouched(tmp_path, capsys):
    from agent.runs import lock_run

    assert _train(tmp_path, "--name", "r1", "--total-steps", "100") == 0
    run = tmp_path / "r1"
    before = _files(run)
    capsys.readouterr()
    held = lock_run(run)  # as a trainer still running there holds it
    try:
        for extra in (["--resume", str(run), "--total-steps", "200"], ["--name", "r1", "--fresh"],
                      ["--name", "r1"]):
            assert _train(tmp_path, *extra) == 2, extra
            err = capsys.readouterr().err
            assert f"{run} is in use by another `atari-agent train` (pid {os.getpid()})" in err
            assert err.count("\n") == 1
        assert _files(run) == before  # nothing archived, written or touched
    finally:
        held.close()
    # its end releases the run: it resumes
    assert _train(tmp_path, "--resume", str(run), "--total-steps", "200") == 0
    assert (run / "checkpoints" / "ckpt-000000000200.pt").is_file()


def test_resume_with_nothing_to_resume(tmp_path, capsys):
    assert main(["train", "--resume", "--runs-dir", str(tmp_path)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_train_help_lists_every_setting(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--lr", "--max-grad-norm", "--td-clip", "--double-dqn", "--on-divergence",
                 "--save-replay", "--resume", "--fresh", "--config"):
        assert flag in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_before_exiting(tmp_path, sig):
    cmd = [sys.executable, "-m", "agent.cli", "train", *TINY, "--runs-dir", str(tmp_path),
           "--name", "sig", "--total-steps", "1000000", "--checkpoint-every", "1000000"]
    stdout = tmp_path / "stdout.txt"
    with stdout.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "sig" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    with reaped(proc):
        while time.monotonic() < deadline:  # wait for learning to be under way
            rows = [json.loads(x) for x in metrics.open()] if metrics.exists() else []
            if any(r.get("updates", 0) > 5 for r in rows):
                break
            time.sleep(0.2)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 130, proc.stderr.read()
    (ckpt,) = (tmp_path / "sig" / "checkpoints").glob("ckpt-*.pt")
    saved = checkpoint.load(ckpt)
    status = json.loads((tmp_path / "sig" / "status.json").read_text())
    assert status["state"] == "interrupted" and saved["counters"]["steps"] == status["steps"]
    events = [json.loads(x).get("event") for x in metrics.open()]
    assert "interrupted" in events
    last = stdout.read_text().splitlines()[-1]
    assert last.startswith("interrupted: ") and (
        f"continue it with `atari-agent train --resume {tmp_path / 'sig'}`" in last)


def test_the_fast_gpu_preset_is_read_and_flags_override_it(tmp_path, capsys):
    # (on this CPU machine: the preset's learner.device "cuda" overridden by --device cpu)
    assert _train(tmp_path, "--preset", "fast-gpu", "--device", "cpu", "--name", "p",
                  "--total-steps", "200", "--envs", "2", "--learning-starts", "128") == 0
    text = (tmp_path / "p" / "config.toml").read_text()
    for line in ("batch_size = 128", "train_freq = 16", "lr = 0.00025", "target_update = 500",
                 "eps_decay_steps = 200000", 'device = "cpu"', "envs = 2",
                 "learning_starts = 128"):  # (the flag over the preset's 20,000)
        assert line in text, line
    capsys.readouterr()
    assert _train(tmp_path, "--preset", "fast-gpu", "--config", "x.toml") == 2
    assert "cannot be combined with --config" in capsys.readouterr().err
