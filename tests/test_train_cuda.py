"""Training on a CUDA GPU (skipped without one; run on a GPU machine with ``-m cuda``): a short
run with one and with two envs, stopped, resumed on the GPU (checkpoint tensors land on the
learner's device: the pending per-update stats included), saved and health-checked after the
resume; and a CUDA-trained checkpoint evaluated and played on a machine without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agent import checkpoint
from agent.config import Config
from agent.train import Trainer
from tests.test_train import toy_config
from tests.toygame import make_fire_game

pytestmark = pytest.mark.cuda
ROOT = Path(__file__).resolve().parents[1]


def cuda_trainer(tmp_path, name, envs, device_frames="off", **run) -> Trainer:
    # the frames on the GPU come with acting captured too: both options in one run
    config = toy_config(learner={"device": "cuda", "precision": "auto",
                                 "device_frames": device_frames,
                                 "act_graph": device_frames == "on"},
                        run={"envs": envs, "checkpoint_every": 300, "total_steps": 900, **run})
    return Trainer(config, tmp_path / name, make_env=make_fire_game, tensorboard=False,
                   out=open(os.devnull, "w"))


@pytest.mark.parametrize("envs, device_frames", [(1, "off"), (2, "off"), (2, "on")])
def test_a_cuda_run_stops_resumes_saves_and_checks_health(tmp_path, envs, device_frames):
    first = cuda_trainer(tmp_path, "run", envs, device_frames, save_replay=True)
    try:
        assert first.learner.device.type == "cuda" and first.learner.graphed
        assert (first.frames is not None) == first.learner.act_graphed == (device_frames == "on")
        assert first.collector.overlap == (envs > 1)  # "auto" overlaps on a GPU
        stopped = first.run(stop_after=437)
        assert stopped.state == "interrupted"
        saved = checkpoint.load(first.store.latest())
        assert saved["pending"] is not None  # stats of updates since the last check
    finally:
        first.close()
    resumed = cuda_trainer(tmp_path, "run", envs, device_frames, save_replay=True)
    try:
        resumed.restore(first.store.latest())
        assert all(t.device.type == "cuda" for t in resumed.health.pending)
        checks_before = len(resumed.checks)
        result = resumed.run()
        assert result.state == "finished" and result.steps >= 900
        assert len(resumed.checks) > checks_before  # health checks ran on the resumed stats
        if resumed.frames is not None:  # the loaded replay went to the GPU, then each new frame
            resumed.frames.sync()
            assert resumed.frames.uploaded == sum(
                min(t, resumed.replay.stream_capacity - 1) for t in resumed.replay.stream_totals)
        last = checkpoint.load(result.checkpoint)
        assert last["counters"]["steps"] == result.steps
        assert not resumed.incidents
    finally:
        resumed.close()


def test_a_cuda_trained_checkpoint_evaluates_and_plays_without_cuda(tmp_path):
    config = Config().replace(
        env={"game": "breakout"},
        learner={"learning_starts": 128, "train_freq": 4, "device": "cuda"},
        replay={"capacity": 2_000},
        watchdog={"check_every": 20},
        run={"total_steps": 400, "report_seconds": 1e9, "checkpoint_every": 400,
             "eval_every": 0, "probe_size": 16, "diag_batch": 64, "envs": 2},
    )
    trainer = Trainer(config, tmp_path / "rom", tensorboard=False, out=open(os.devnull, "w"))
    try:
        result = trainer.run()
    finally:
        trainer.close()
    assert result.state == "finished"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    code = "import torch, sys; sys.exit(1 if torch.cuda.is_available() else 0)"
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
    out = tmp_path / "eval.json"
    ev = subprocess.run([sys.executable, "-m", "agent.cli", "evaluate", str(result.checkpoint),
                         "--episodes", "2", "--workers", "2", "--max-frames", "4000",
                         "--json", str(out)], env=env, capture_output=True, text=True,
                        timeout=600)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(out.read_text())
    video = tmp_path / "play.mp4"
    pl = subprocess.run([sys.executable, "-m", "agent.cli", "play", str(result.checkpoint),
                         "--video", str(video), "--max-steps", "50", "--no-window"], env=env,
                        capture_output=True, text=True, timeout=600)
    assert pl.returncode == 0, pl.stderr
    assert video.stat().st_size > 0
    assert torch.cuda.is_available()  # (this process still has its GPU)
