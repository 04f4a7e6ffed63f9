"""Ape-X actors on a local Ray instance (the [ray] extra): two actors fill the replay and the
FIRE test game is learned from their data; the run resumes with --ray; an actor killed with
SIGKILL is restarted by Ray and the run goes on; the Ray processes a run started are gone after
it."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from agent import checkpoint
from agent.train import Trainer
from tests.procs import descendants, wait_gone
from tests.test_train import toy_config
from tests.toygame import make_fire_game

pytest.importorskip("ray")

RAY = {"address": "local", "actors": 2, "chunk": 25, "sync_every": 100, "actor_timeout": 180.0}


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _trainer(config, run_dir):
    return Trainer(config, run_dir, make_env=make_fire_game, tensorboard=False,
                   out=open(os.devnull, "w"))


def test_two_actors_teach_the_fire_game_and_a_resumed_run_survives_a_killed_actor(tmp_path):
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

    # --resume with --ray: the actors start from the learner's weights; one is killed (kill -9)
    resumed = _trainer(config.replace(run={"total_steps": 1_000_000}), run_dir)
    resumed.restore(checkpoint.CheckpointStore(run_dir).latest())
    killed = []

    def kill_then_stop():
        deadline = time.monotonic() + 240
        while resumed.steps < 2_400 + 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = resumed.collector.worker_pids[1]
        os.kill(pid, signal.SIGKILL)
        killed.append((pid, resumed.steps))
        while resumed.collector._restarts[1] == 0 and time.monotonic() < deadline:
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
    assert again.state == "interrupted" and again.steps > killed[0][1], (again, events)
    restarts = [e for e in events if e["event"] == "actor_restart"]
    assert restarts and restarts[0]["actor"] == 1 and restarts[0]["pid"] != killed[0][0]
    assert killed[0][0] not in pids and len(pids) == 2
    assert checkpoint.load(again.checkpoint)["counters"]["steps"] == again.steps
    assert wait_gone(descendants(os.getpid()) - before, 30.0) == []
