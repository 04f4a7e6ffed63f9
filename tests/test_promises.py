"""Promises the README makes about a run that no other test held it to: a halt after
max_rollbacks roll-backs in a row, the next health check after an alarm, a second Ctrl-C giving
up on the save, SIGUSR1 printing a row, and a resume without a replay snapshot refilling
learning_starts transitions before learning again."""

from __future__ import annotations

import json
import os
import signal

import pytest

from agent.train import Trainer
from tests.test_train import toy_config, toy_trainer
from tests.toygame import FireGame


def _rows(trainer) -> list[dict]:
    return [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").open()]


def _alarm_at(trainer, alarming) -> list[int]:
    """Make the watchdog alarm at the checks whose number (0-based) `alarming(i)` names; the
    checks' numbers are returned as they happen."""
    check, seen = trainer.health.watchdog.check, []

    def judged(m, weights_finite=True):
        seen.append(len(seen))
        reasons = check(m, weights_finite)
        return ["injected alarm"] if alarming(seen[-1]) else reasons

    trainer.health.watchdog.check = judged
    return seen


def test_the_run_halts_after_max_rollbacks_in_a_row(tmp_path):
    trainer = toy_trainer(tmp_path, watchdog={"check_every": 50, "max_rollbacks": 2})
    trainer.run(stop_after=500)  # a healthy checkpoint at 500
    first = len(list(trainer.checks))
    _alarm_at(trainer, lambda i: True)  # from now on every check alarms
    trainer._stop_reason = None
    result = trainer.run()
    assert result.state == "halted"
    events = [r for r in _rows(trainer) if "event" in r]
    kinds = [e["event"] for e in events if e["event"] in ("rollback", "halt")]
    assert kinds == ["rollback", "rollback", "halt"], kinds
    halt = next(e for e in events if e["event"] == "halt")
    assert "2 roll-backs in a row" in halt["message"]
    assert len(list(trainer.checks)) == first + 3  # rollback, rollback, halt: nothing more
    assert trainer.store.latest().name == "ckpt-000000000500.pt"


def test_after_a_rollback_the_next_check_judges_afresh(tmp_path):
    trainer = toy_trainer(tmp_path, watchdog={"check_every": 50})
    trainer.run(stop_after=500)
    updates = trainer.learner.updates
    seen = _alarm_at(trainer, lambda i: i == 0)  # the first check from here alarms, once
    trainer._stop_reason = None
    trainer.run(stop_after=1_000)  # through the periodic checkpoint at 1,000
    checks = list(trainer.checks)[-len(seen):]
    assert checks[0]["alarm"] == ["injected alarm"]
    assert all(not c["alarm"] for c in checks[1:]) and len(checks) >= 3
    # the check after the alarm came check_every updates later, and the run went on healthy
    assert checks[1]["updates"] - checks[0]["updates"] == 50
    assert checks[0]["updates"] == updates + 50 - updates % 50
    assert trainer.healthy and trainer.health.rollbacks_in_row == 0  # saved healthy at 1,000


class _Signalling(FireGame):
    """The toy game, sending this process `signals` when the run reaches step `at`."""

    at: int = 0
    signals: tuple = ()
    steps = 0

    def step(self, action, out=None):
        type(self).steps += 1
        if type(self).steps == self.at:
            for sig in self.signals:
                os.kill(os.getpid(), sig)
        return super().step(action, out)


def _signalling_trainer(tmp_path, at: int, *signals) -> Trainer:
    game = type("Game", (_Signalling,), {"at": at, "signals": signals, "steps": 0})
    return Trainer(toy_config(), tmp_path / "run", make_env=lambda s, c: game(s, c),
                   tensorboard=False, out=open(os.devnull, "w"))


def test_sigusr1_prints_a_row_at_once(tmp_path):
    trainer = _signalling_trainer(tmp_path, 321, signal.SIGUSR1)
    trainer.run(stop_after=600)
    rows = [r for r in _rows(trainer) if "event" not in r]
    # report_seconds is 1e6: without the signal the only row is the last one, at 600
    assert [r["steps"] for r in rows] == [321, 600]


def test_a_second_ctrl_c_gives_up_on_the_save(tmp_path):
    trainer = _signalling_trainer(tmp_path, 650, signal.SIGINT, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    trainer.close()
    # the first Ctrl-C asked for a save; the second abandoned it: only the periodic 500
    saved = sorted(p.name for p in (trainer.run_dir / "checkpoints").glob("ckpt-*.pt"))
    assert saved == ["ckpt-000000000500.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_a_resume_without_a_replay_snapshot_refills_before_learning(tmp_path):
    first = toy_trainer(tmp_path)
    first.run(stop_after=600)
    first.close()
    second = toy_trainer(tmp_path)
    second.restore(second.store.latest())
    updates = second.learner.updates
    starts = second.config.learner.learning_starts  # 200, at train_freq 1
    second.run(stop_after=600 + starts - 1)
    assert second.learner.updates == updates  # refilling: no update yet
    second._stop_reason = None
    second.run(stop_after=600 + starts + 100)
    assert second.learner.updates == updates + 101
    second.close()
