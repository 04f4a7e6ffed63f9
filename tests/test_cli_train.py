"""`atari-agent train / runs / demo` from the command line: a real ROM, tiny budgets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from agent import checkpoint
from agent.cli import main

TINY = ["--game", "breakout", "--learning-starts", "64", "--capacity", "1000",
        "--check-every", "10", "--report-seconds", "0.5", "--checkpoint-every", "100",
        "--eval-every", "0", "--threads", "1", "--probe-size", "8", "--diag-batch", "32"]


def _train(tmp_path, *extra):
    return main(["train", *TINY, "--runs-dir", str(tmp_path), *extra])


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
])
def test_bad_train_arguments_are_one_line(tmp_path, capsys, args, message):
    assert main(["train", "--runs-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # no run directory left behind


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
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "sig" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # wait for learning to be under way
            rows = [json.loads(x) for x in metrics.open()] if metrics.exists() else []
            if any(r.get("updates", 0) > 5 for r in rows):
                break
            time.sleep(0.2)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 130, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (ckpt,) = (tmp_path / "sig" / "checkpoints").glob("ckpt-*.pt")
    saved = checkpoint.load(ckpt)
    status = json.loads((tmp_path / "sig" / "status.json").read_text())
    assert status["state"] == "interrupted" and saved["counters"]["steps"] == status["steps"]
    events = [json.loads(x).get("event") for x in metrics.open()]
    assert "interrupted" in events


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
