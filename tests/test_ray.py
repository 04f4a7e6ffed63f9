"""Ape-X actors on a local Ray instance (the [ray] extra): two actors fill the replay and the
FIRE test game is learned from their data; an actor killed with SIGKILL is restarted and the
run goes on; the run resumes; the Ray processes the run started are gone after it."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from agent import checkpoint
from agent.train import Trainer, train
from tests.procs import descendants, wait_gone
from tests.test_train import toy_config
from tests.toygame import make_fire_game

pytest.importorskip("ray")

RAY = {"address": "local", "actors": 2, "chunk": 25, "sync_every": 100, "actor_timeout": 60.0}


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_actors_teach_the_fire_game_and_survive_a_kill_and_a_resume(tmp_path):
    config = toy_config(ray=RAY, run={"total_steps": 2_400, "report_seconds": 2.0})
    run_dir = tmp_path / "run"
    before = descendants(os.getpid())
    trainer = Trainer(config, run_dir, make_env=make_fire_game, tensorboard=False,
                      out=open("/dev/null", "w"))
    killed = []

    def kill_one():  # SIGKILL one actor's process mid-run, as `kill -9` would
        while trainer.steps < 800:
            time.sleep(0.05)
        pid = trainer.collector.worker_pids[1]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    try:
        result = trainer.run()
        pids = trainer.collector.worker_pids
        totals = list(trainer.replay.stream_totals)
    finally:
        trainer.close()
    killer.join(5)
    assert result.state == "finished", result
    assert killed and killed[0] not in pids and len(pids) == 2  # restarted: a new process
    events = [r for r in _rows(run_dir) if "event" in r]
    assert any(e["event"] == "actor_restart" and e["actor"] == 1 for e in events), events
    assert all(t > 100 for t in totals), totals  # every stream of both actors has data
    # learned from the actors' data: the last checks agree with FIRE
    checks = list(trainer.checks)
    assert checks[-1]["greedy_dist"]["FIRE"] >= 0.9 and checks[-1]["agree"] >= 60, checks[-1]
    rows = [r for r in _rows(run_dir) if "actor_sps" in r]
    assert rows and len(rows[-1]["actor_sps"]) == 2 and len(rows[-1]["weights_age"]) == 2
    assert all(a is not None and a >= 0 for a in rows[-1]["weights_age"]), rows[-1]

    # a resume with --ray continues the run (the actors start from the learner's weights)
    more = config.replace(run={"total_steps": 3_000})
    last = checkpoint.CheckpointStore(run_dir).latest()
    resumed = train(more, run_dir, resume_from=last, make_env=make_fire_game,
                    out=open("/dev/null", "w"), tensorboard=False)
    assert resumed.state == "finished" and resumed.steps >= 3_000
    assert checkpoint.load(resumed.checkpoint)["counters"]["steps"] >= 3_000
    # nothing the runs started is left (Ray's own processes included)
    assert wait_gone(descendants(os.getpid()) - before, 30.0) == []
