"""Corrupt and wrong inputs through the commands a user runs: each is one clear line naming the
problem, exit code 2, and every file already saved stays byte for byte as it was."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from agent import checkpoint
from agent.cli import main
from agent.train import Trainer
from tests.test_train import toy_config
from tests.toygame import make_fire_game

TINY = ["--game", "breakout", "--learning-starts", "64", "--capacity", "1000",
        "--check-every", "10", "--report-seconds", "0.5", "--checkpoint-every", "100",
        "--eval-every", "0", "--threads", "1", "--probe-size", "8", "--diag-batch", "32"]
LATEST = "checkpoints/ckpt-000000000200.pt"


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory):
    """Two finished 200-step runs: breakout (documented actions) and pong."""
    root = tmp_path_factory.mktemp("saved")
    for game in ("breakout", "pong"):
        assert main(["train", *TINY, "--game", game, "--runs-dir", str(root), "--name", game,
                     "--total-steps", "200"]) == 0
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line_error(capsys, command: str, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"atari-agent {command}: "), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


class _Code:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _damage_truncate(path: Path, _: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _damage_random(path: Path, _: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _damage_version(path: Path, _: Path) -> None:
    saved = checkpoint.load(path)
    saved["version"] = checkpoint.VERSION + 1
    torch.save(saved, path)


def _damage_pickle(path: Path, _: Path) -> None:
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "x": _Code()}, path)


def _other_game(path: Path, runs: Path) -> None:
    shutil.copyfile(runs / "pong" / LATEST, path)


RESUME_DAMAGE = [
    ("truncated", _damage_truncate, ["truncated or corrupt"]),
    ("random bytes", _damage_random, ["truncated or corrupt"]),
    ("format version", _damage_version, [f"format version {checkpoint.VERSION + 1}"]),
    ("pickle with code", _damage_pickle, ["refused"]),
    ("another game", _other_game, ["'pong'", "'breakout'"]),
]


@pytest.mark.parametrize("name, damage, needles", RESUME_DAMAGE, ids=[d[0] for d in RESUME_DAMAGE])
def test_resume_from_a_bad_checkpoint(saved_runs, tmp_path, capsys, monkeypatch, name, damage,
                                      needles):
    runs = tmp_path / "runs"
    shutil.copytree(saved_runs, runs)
    monkeypatch.chdir(tmp_path)  # a pickle that ran would leave PWNED here
    run = runs / "breakout"
    damage(run / LATEST, runs)
    before = _snapshot(runs)
    assert main(["train", "--resume", str(run), "--total-steps", "300"]) == 2
    _one_line_error(capsys, "train", str(run / LATEST), *needles)
    assert _snapshot(runs) == before
    assert not (tmp_path / "PWNED").exists()


def test_resume_with_another_action_layout(saved_runs, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(saved_runs, runs)
    before = _snapshot(runs)
    assert main(["train", "--resume", str(runs / "breakout"), "--action-set", "minimal"]) == 2
    _one_line_error(capsys, "train", "'documented' action set", "'minimal'")
    assert _snapshot(runs) == before


@pytest.mark.parametrize("text, needles", [
    ("[learner]\nlearning_rate = 1e-4\n", ["unknown key(s) learner.learning_rate"]),
    ("[learner]\nlr = \"fast\"\n", ["learner.lr must be a number, got 'fast'"]),
    ("[learner]\nlr = -0.1\n", ["learner.lr must be a number in (0.0, 1.0], got -0.1"]),
    ("[learner]\nbatch_size = 64\n[replay]\ncapacity = 32\n",
     ["learner.batch_size (64) must not exceed replay.capacity (32)"]),
    ("[learner]\ngamma = 1.01\n", ["learner.gamma must be a number in [0.0, 1.0], got 1.01"]),
])
def test_a_bad_config_file_starts_nothing(saved_runs, tmp_path, capsys, text, needles):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    runs = tmp_path / "runs"
    shutil.copytree(saved_runs, runs)
    before = _snapshot(runs)
    assert main(["train", "--config", str(config), "--runs-dir", str(runs)]) == 2
    _one_line_error(capsys, "train", str(config), *needles)
    assert _snapshot(runs) == before  # no new run directory, nothing touched


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_reward_stops_training_and_keeps_the_checkpoints(tmp_path, bad):
    def make_env(seed, config):
        env = make_fire_game(seed, config)
        step = env.step
        count = [0]

        def poisoned(action, out=None):
            s = step(action, out=out)
            count[0] += 1
            return dataclasses.replace(s, reward=bad) if count[0] == 650 else s

        env.step = poisoned
        return env

    trainer = Trainer(toy_config(), tmp_path / "run", make_env=make_env, tensorboard=False,
                      out=open(os.devnull, "w"))
    result = trainer.run()
    assert result.state == "failed"
    assert re.match(rf"step 650: .*reward must be a finite number, got {bad}", result.error)
    saved = sorted((tmp_path / "run" / "checkpoints").glob("ckpt-*.pt"))
    assert [p.name for p in saved] == ["ckpt-000000000500.pt"]
    assert checkpoint.load(saved[0])["counters"]["steps"] == 500
    assert trainer.steps == 649  # the bad transition was refused: never counted nor stored
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "reward must be a finite number" in status["error"]


def test_a_float_observation_is_refused_by_name(tmp_path):
    trainer = Trainer(toy_config(), tmp_path / "run", make_env=make_fire_game,
                      tensorboard=False, out=open(os.devnull, "w"))
    obs = trainer.env.observation.astype(np.float32)
    obs[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"observations must be uint8 frames .* got "
                                         r"torch.float32"):
        trainer.learner.act(obs)
