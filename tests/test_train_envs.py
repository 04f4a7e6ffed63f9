"""Training on N envs at once: the toy game is learned, the replay ratio counts steps over all
envs, a two-env run resumed from a checkpoint (with its replay snapshot) equals an uninterrupted
one bit for bit, and through the command: "auto" envs, a changed --envs refused on resume, and a
killed env worker that stops the run "failed" with the worker named and the last checkpoint
intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from agent import checkpoint
from agent.cli import main
from agent.collector import available_cores
from agent.train import Trainer
from tests.procs import reaped
from tests.test_train import _assert_same, toy_config
from tests.toygame import LENGTH, make_fire_game


def envs_trainer(tmp_path, name="run", envs=2, **sections) -> Trainer:
    run = {**sections.pop("run", {}), "envs": envs}
    return Trainer(toy_config(run=run, **sections), tmp_path / name, make_env=make_fire_game,
                   tensorboard=False, out=open(os.devnull, "w"))


@pytest.mark.parametrize("overlap", ["off", "on"])
def test_fire_game_is_learned_with_two_envs(tmp_path, trainers, overlap):
    trainer = envs_trainer(tmp_path, run={"overlap": overlap})
    trainers.append(trainer)
    assert trainer.collector.num_envs == 2
    # lock step: env 0 here, env 1 in a worker; overlap: both in workers
    assert len(trainer.collector.worker_pids) == (2 if overlap == "on" else 1)
    result = trainer.run()
    assert result.state == "finished" and result.steps == 2_000
    checks = list(trainer.checks)
    reached = [i for i, c in enumerate(checks)
               if c["agree"] >= 85 and c["greedy_dist"]["FIRE"] >= 0.9]
    assert reached, [(c["steps"], c["agree"]) for c in checks]
    for c in checks[reached[0]:]:
        assert c["agree"] >= 85 and c["greedy_dist"]["FIRE"] >= 0.9, c
    assert not trainer.incidents
    # Both envs played whole episodes of the toy game into their own replay streams.
    assert trainer.episodes == 2 * (1_000 // LENGTH)
    assert trainer.replay.streams == 2
    assert trainer.replay.stream_totals[0] == trainer.replay.stream_totals[1]


@pytest.mark.parametrize("envs", [3])
def test_the_replay_ratio_counts_agent_steps_over_all_envs(tmp_path, trainers, envs):
    trainer = envs_trainer(tmp_path, envs=envs, learner={"train_freq": 4},
                           run={"total_steps": 600})
    trainers.append(trainer)
    trainer.run()
    # 3 envs, 200 rounds: learning from the round that reached 200 transitions; one update per
    # 4 agent steps after that, counted over the envs (not per round).
    assert trainer.steps == 600
    start = -(-200 // envs) * envs  # the step count of the first round that may learn
    assert trainer.learner.updates == 600 // 4 - (start - envs) // 4


def _state(trainer: Trainer) -> dict:
    envs = trainer.collector.state_dict()
    return {"learner": trainer.learner.state_dict(), "steps": trainer.steps,
            "episodes": trainer.episodes, "scores": list(trainer.scores),
            "replay": trainer.replay.state_dict(), "envs": envs["env"],
            "explore": envs["explore"], "obs": trainer.collector.observations.copy(),
            "checks": [dict(c) for c in trainer.checks]}


@pytest.mark.parametrize("overlap", ["off", "on"])
def test_two_env_stop_and_resume_equals_an_uninterrupted_run(tmp_path, trainers, overlap):
    kw = {"run": {"total_steps": 900, "report_seconds": 1e6, "checkpoint_every": 300,
                  "eval_every": 0, "diag_batch": 128, "probe_size": 32, "seed": 5,
                  "save_replay": True, "overlap": overlap}}
    straight = envs_trainer(tmp_path, "straight", **kw)
    trainers.append(straight)
    straight.run()
    first = envs_trainer(tmp_path, "stopped", **kw)
    trainers.append(first)
    stopped = first.run(stop_after=437)  # mid-episode, between checkpoints
    assert stopped.state == "interrupted" and stopped.steps == 438  # rounds of 2 steps
    saved = checkpoint.load(first.store.latest())
    assert saved["counters"]["envs"] == 2 and len(saved["env"]) == 2
    assert len(saved["rng"]["explore"]) == 2
    first.close()
    resumed = envs_trainer(tmp_path, "stopped", **kw)
    trainers.append(resumed)
    resumed.restore(first.store.latest())
    result = resumed.run()
    assert result.state == "finished" and result.steps == 900
    a, b = _state(straight), _state(resumed)
    b["checks"] = [*[c for c in first.checks if c["steps"] <= 438], *b["checks"]]
    _assert_same(a, b)


def test_a_checkpoint_of_another_number_of_envs_is_refused(tmp_path, trainers):
    one = envs_trainer(tmp_path, "one", envs=1, run={"total_steps": 300})
    trainers.append(one)
    one.run()
    two = envs_trainer(tmp_path, "one", envs=2, run={"total_steps": 300})
    trainers.append(two)
    with pytest.raises(checkpoint.CheckpointError, match=r"a run with 1 env\(s\).*2 were asked "
                                                          r"for: a run keeps its number of envs"):
        two.restore(one.store.latest())


# ------------------------------------------------------------------------------ the command
TINY = ["--game", "breakout", "--learning-starts", "64", "--capacity", "1000",
        "--check-every", "10", "--report-seconds", "0.5", "--checkpoint-every", "100",
        "--eval-every", "0", "--threads", "1", "--probe-size", "8", "--diag-batch", "32"]


def test_auto_envs_and_a_changed_envs_refused_on_resume(tmp_path, capsys):
    assert main(["train", *TINY, "--runs-dir", str(tmp_path), "--name", "auto",
                 "--total-steps", "200"]) == 0
    run = tmp_path / "auto"
    cores = available_cores()
    assert f"envs = {cores}" in (run / "config.toml").read_text()
    assert checkpoint.load(run / "checkpoints" / "ckpt-000000000200.pt")["counters"][
        "envs"] == cores
    capsys.readouterr()
    other = 1 if cores > 1 else 2
    before = (run / "config.toml").read_text()
    assert main(["train", "--resume", str(run), "--envs", str(other),
                 "--total-steps", "300"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a run keeps its number of envs" in err
    assert (run / "config.toml").read_text() == before  # nothing written
    assert main(["train", "--resume", str(run), "--total-steps", "300"]) == 0


def test_bad_envs_flag_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--runs-dir", str(tmp_path), "--envs", "0"])
    assert "expected a number of envs >= 1 or 'auto', got '0'" in capsys.readouterr().err


def test_a_killed_env_worker_fails_the_run_naming_it(tmp_path):
    cmd = [sys.executable, "-m", "agent.cli", "train", *TINY, "--runs-dir", str(tmp_path),
           "--name", "kill", "--envs", "2", "--total-steps", "1000000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "kill"
    deadline = time.monotonic() + 120
    with reaped(proc):
        while time.monotonic() < deadline:  # a checkpoint written and the workers known
            status = (json.loads((run / "status.json").read_text())
                      if (run / "status.json").exists() else {})
            if status.get("checkpoint") and status.get("workers"):
                break
            time.sleep(0.1)
        (worker,) = status["workers"]
        os.kill(worker, signal.SIGKILL)  # our own child's pid, read from the run's status
        assert proc.wait(timeout=60) == 4
        err = proc.stderr.read()
    # (it "died", or "closed its pipe" when the pipe's EOF is read before the exit is seen)
    assert f"worker 1 (pid {worker})" in err and "SIGKILL" in err, err
    assert "--resume" in err and err.count("\n") == 1, err
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "worker 1" in status["error"]
    last = checkpoint.CheckpointStore(run).latest()
    assert last is not None and checkpoint.load(last)["counters"]["steps"] >= 100
    # the run goes on from it
    assert main(["train", "--resume", str(run), "--total-steps",
                 str(checkpoint.load(last)["counters"]["steps"] + 100)]) == 0


def test_env_worker_pids_are_gone_after_a_run(tmp_path, trainers):
    trainer = envs_trainer(tmp_path, run={"total_steps": 300})
    pids = trainer.collector.worker_pids
    trainer.run()
    trainer.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert np.all(trainer.collector.observations >= 0)  # the views stay readable after close
