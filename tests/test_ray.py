"""Ape-X actors on a local Ray instance (the [ray] extra): two actors fill the replay and the
FIRE test game is learned from their data; the run resumes with --ray; an actor killed with
SIGKILL, and one that hangs (SIGSTOP), are restarted by Ray and the run goes on; the Ray
processes a run started are gone after it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from agent import checkpoint
from agent.train import Trainer
from tests.procs import descendants, reaped, wait_gone
from tests.test_train import toy_config
from tests.toygame import make_fire_game

pytest.importorskip("ray")

RAY = {"address": "local", "actors": 2, "chunk": 25, "sync_every": 100, "actor_timeout": 180.0}
HUNG_S = 15.0  # the resumed run's ray.actor_timeout: how soon a stopped actor counts as hung


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _trainer(config, run_dir):
    return Trainer(config, run_dir, make_env=make_fire_game, tensorboard=False,
                   out=open(os.devnull, "w"))


def test_two_actors_teach_the_fire_game_and_a_resumed_run_survives_killed_and_hung_actors(
        tmp_path):
    config = toy_config(ray=RAY, run={"total_steps": 2_400, "report_seconds": 2.0})
    run_dir = tmp_path / "run"
    before = descendants(os.getpid())
    trainer = _trainer(config, run_dir)
    try:
        result = trainer.run()
        totals = list(trainer.replay.stream_totals)
    finally:
        trainer.close()
    assert result.state == "finished", result
    assert all(t > 100 for t in totals), totals  # every stream of both actors has data
    checks = list(trainer.checks)  # learned from the actors' data: greedy FIRE
    assert checks[-1]["greedy_dist"]["FIRE"] >= 0.9 and checks[-1]["agree"] >= 60, checks[-1]
    rows = [r for r in _rows(run_dir) if "actor_sps" in r]
    assert rows and len(rows[-1]["actor_sps"]) == 2, rows[-1:]
    assert all(a is not None and a >= 0 for a in rows[-1]["weights_age"]), rows[-1]
    assert wait_gone(descendants(os.getpid()) - before, 30.0) == []  # Ray's processes too

    # --resume with --ray: the actors start from the learner's weights. Actor 1 is killed
    # (kill -9); then actor 0 hangs (SIGSTOP): after ray.actor_timeout it is killed and restarted.
    resumed = _trainer(config.replace(run={"total_steps": 1_000_000},
                                      ray={"actor_timeout": HUNG_S}), run_dir)
    resumed.restore(checkpoint.CheckpointStore(run_dir).latest())
    killed = []

    def kill_then_stop():
        deadline = time.monotonic() + 300
        collector = resumed.collector
        while resumed.steps < 2_400 + 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        for actor, sig in ((1, signal.SIGKILL), (0, signal.SIGSTOP)):
            pid = collector.actors[actor].pid
            os.kill(pid, sig)
            killed.append((pid, resumed.steps))
            while collector.actors[actor].restarts == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # a chunk or two from the restarted actor
        resumed.request_stop("test")

    stopper = threading.Thread(target=kill_then_stop, daemon=True)
    stopper.start()
    try:
        again = resumed.run()
        pids = resumed.collector.worker_pids
    finally:
        resumed.close()
    stopper.join(5)
    events = [r for r in _rows(run_dir) if "event" in r]
    assert again.state == "interrupted" and again.steps > killed[1][1], (again, events)
    restarts = [e for e in events if e["event"] == "actor_restart"]
    assert [e["actor"] for e in restarts] == [1, 0], restarts
    assert all(e["pid"] != pid for e, (pid, _) in zip(restarts, killed, strict=True)), restarts
    hung = [e for e in events if e["event"] == "actor_hung"]
    assert [e["actor"] for e in hung] == [0], hung  # the stopped one only
    assert not set(pids) & {pid for pid, _ in killed} and len(pids) == 2, (pids, killed)
    assert checkpoint.load(again.checkpoint)["counters"]["steps"] == again.steps
    assert wait_gone(descendants(os.getpid()) - before, 30.0) == []


TINY = ["--game", "breakout", "--learning-starts", "64", "--capacity", "2000", "--check-every",
        "10", "--report-seconds", "0.5", "--checkpoint-every", "200", "--eval-every", "0",
        "--threads", "1", "--probe-size", "8", "--diag-batch", "32", "--ray", "--actors", "2",
        "--chunk", "20", "--sync-every", "100"]
RAY_GONE_S = 150.0  # after a SIGKILL'd learner, Ray's node agents end by themselves (~1 min)


def test_a_learner_killed_with_sigkill_keeps_its_checkpoints_resumes_and_leaves_no_process(
        tmp_path):
    """The real command with --ray is killed (kill -9) after a checkpoint: the Ray processes it
    started end by themselves, its checkpoints load, and --resume --ray finishes the run."""
    runs = ["--runs-dir", str(tmp_path), "--name", "run"]
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "train", *TINY, *runs,
                                 "--total-steps", "10000000"], stdout=out, stderr=out)

    def latest():  # (a store reads index.json once, when made)
        return checkpoint.CheckpointStore(tmp_path / "run").latest()

    with reaped(proc):
        deadline = time.monotonic() + 240
        while latest() is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert latest() is not None, log.read_text()[-3000:]
        ray_pids = descendants(proc.pid)  # the Ray instance and actors this run started
        assert len(ray_pids) >= 4, ray_pids
        os.kill(proc.pid, signal.SIGKILL)
    saved = checkpoint.load(latest())["counters"]["steps"]
    resumed = subprocess.run([sys.executable, "-m", "agent.cli", "train", "--resume",
                              str(tmp_path / "run"), "--total-steps", str(saved + 400)],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert checkpoint.load(latest())["counters"]["steps"] >= saved + 400
    assert wait_gone(ray_pids, RAY_GONE_S) == []
