"""Training: the FIRE test game is learned and kept, the clips bound what they must, the
watchdog catches an injected divergence and rolls back, a resumed run equals an uninterrupted one,
and a short run on a real ROM writes checkpoints and every diagnostic field."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agent import checkpoint
from agent.config import Config, LearnerConfig
from agent.learner import Learner, td_targets
from agent.native import FrameReplay
from agent.report import ROW_KEYS
from agent.train import Trainer
from tests.toygame import make_fire_game


def toy_config(**sections) -> Config:
    base = Config().replace(
        env={"frame_shape": [36, 36], "stack": 2},
        learner={"learning_starts": 200, "train_freq": 1, "target_update": 100, "n_step": 1,
                 "lr": 5e-4, "threads": 1, "precision": "fp32"},
        explore={"eps_decay_steps": 800, "eps_end": 0.01},
        replay={"capacity": 800},
        watchdog={"check_every": 50},
        run={"total_steps": 2_000, "report_seconds": 1e6, "checkpoint_every": 500,
             "eval_every": 0, "diag_batch": 256, "probe_size": 64, "seed": 3, "envs": 1},
    )
    return base.replace(**sections) if sections else base


def toy_trainer(tmp_path, name="run", **sections) -> Trainer:
    return Trainer(toy_config(**sections), tmp_path / name, make_env=make_fire_game,
                   tensorboard=False, out=open("/dev/null", "w"))


def test_fire_game_is_learned_and_kept(tmp_path):
    trainer = toy_trainer(tmp_path)
    result = trainer.run()
    assert result.state == "finished"
    checks = list(trainer.checks)
    reached = [i for i, c in enumerate(checks)
               if c["agree"] >= 85 and c["greedy_dist"]["FIRE"] >= 0.9]
    assert reached, [(c["steps"], c["agree"]) for c in checks]
    for c in checks[reached[0]:]:  # ...and it stays there for the rest of the run
        assert c["agree"] >= 85 and c["greedy_dist"]["FIRE"] >= 0.9, c
    assert not trainer.incidents
    # the saved checkpoint acts greedily FIRE on the game's states
    saved = checkpoint.load(result.checkpoint)
    assert saved["layout"]["ale_names"] == ["NOOP", "DOWN", "FIRE", "DOWNFIRE"]
    assert trainer.checks[-1]["replay_dist"]["FIRE"] > 0.9


def test_a_decaying_step_size_reaches_adam_and_the_metrics(tmp_path):
    """learner.lr_decay_steps: every update steps with the schedule's rate (the optimizer's,
    read after the run) and each metrics.jsonl row says the rate at its step."""
    trainer = toy_trainer(tmp_path, learner={"lr": 5e-4, "lr_end": 1e-4, "lr_decay_steps": 600},
                          run={"total_steps": 600, "report_seconds": 1e-9})
    assert trainer.run().state == "finished"
    (group,) = trainer.learner.optimizer.param_groups
    # the last update ran at step 600: 400 steps into the decay, 2/3 of the way
    assert float(group["lr"]) == pytest.approx(5e-4 - 4e-4 * 400 / 600, rel=1e-5)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    lrs = [(r["steps"], r["lr"]) for r in rows if "event" not in r]
    assert len(lrs) >= 2
    for steps, lr in lrs:
        assert lr == pytest.approx(trainer.config.learner.lr_at(steps))
    assert lrs[-1][1] < lrs[0][1]


def _batch(n=8, stack=2, hw=36, reward=0.0, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 255, (n, stack, hw, hw), dtype=np.uint8)
    return SimpleNamespace(obs=obs, next_obs=obs[::-1].copy(),
                           action=rng.integers(0, 4, n).astype(np.int64),
                           reward=np.full(n, reward, np.float32),
                           discount=np.full(n, 0.99, np.float32), weight=np.ones(n, np.float32))


def test_gradient_clipping_bounds_the_update_under_a_huge_td_error():
    torch.manual_seed(0)
    cfg = LearnerConfig(td_clip=0.0, precision="fp32", huber_delta=1e9)  # let the error through
    learner = Learner(cfg, 4, stack=2, frame_shape=(36, 36))
    before = [p.detach().clone() for p in learner.online.parameters()]
    result = learner.update(_batch(reward=1e6))
    loss, grad_norm, clip_delta, _ = result.stats.tolist()
    assert grad_norm > 1e4 * cfg.max_grad_norm  # a huge pre-clip gradient...
    post = torch.nn.utils.get_total_norm([p.grad for p in learner.online.parameters()])
    assert float(post) <= cfg.max_grad_norm * 1.001  # ...clipped to max_norm before the step
    assert clip_delta == pytest.approx(float(post) / grad_norm, rel=1e-3)
    # SGD-sized check of the step itself: Adam's first step moves each weight by at most ~lr
    step = max(float((p.detach() - b).abs().max()) for p, b in
               zip(learner.online.parameters(), before, strict=True))
    assert step <= cfg.lr * 1.01


def test_clip_delta_is_one_when_not_clipped():
    learner = Learner(LearnerConfig(precision="fp32"), 4, stack=2, frame_shape=(36, 36))
    _, grad_norm, clip_delta, _ = learner.update(_batch(reward=0.0)).stats.tolist()
    assert grad_norm < 10 and clip_delta == 1.0


def _channels_last(batch):
    """The same batch with obs and next_obs as (B, stack, H, W) views of (B, H, W, stack) bytes,
    as FrameReplay.sample(..., channels_last=True) hands them over."""
    def nhwc(a):
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return SimpleNamespace(**{**vars(batch), "obs": nhwc(batch.obs),
                              "next_obs": nhwc(batch.next_obs)})


def test_learner_wants_channels_last_batches_when_its_weights_are():
    def make(**kw):
        return Learner(LearnerConfig(device="cpu", **kw), 4, stack=2, frame_shape=(36, 36))

    nchw, fp32, bf16 = make(channels_last=False), make(precision="fp32"), make(precision="bf16")
    assert not nchw.channels_last and fp32.channels_last and bf16.channels_last  # the default
    for learner in (nchw, fp32, bf16):
        for net in (learner.online, learner.target):
            w = net.features[0].weight
            assert w.is_contiguous(memory_format=torch.channels_last) == learner.channels_last


def test_to_device_takes_a_channels_last_replay_batch_without_a_copy():
    learner = Learner(LearnerConfig(precision="bf16", device="cpu"), 4, stack=2,
                      frame_shape=(36, 36))
    replay = FrameReplay(100, (36, 36), stack=2, n_step=1)
    rng = np.random.default_rng(0)
    replay.reset(rng.integers(0, 256, (36, 36), dtype=np.uint8))
    for _ in range(50):
        replay.add(0, 0.0, False, False, rng.integers(0, 256, (36, 36), dtype=np.uint8))
    batch = replay.sample(8, channels_last=learner.channels_last)
    for arr in (batch.obs, batch.next_obs):
        t = learner.to_device(arr)
        assert t.data_ptr() == arr.ctypes.data  # the batch's own bytes
        assert t.is_contiguous(memory_format=torch.channels_last)
        # what QNetwork.forward does before conv1: nothing left to permute
        assert t.contiguous(memory_format=torch.channels_last) is t
        assert torch.equal(t, torch.from_numpy(np.ascontiguousarray(arr)))
    plain = replay.sample(8)
    assert learner.to_device(plain.obs).data_ptr() == plain.obs.ctypes.data
    flipped = plain.obs[::-1]  # negative strides: torch cannot view them, so a copy
    assert torch.equal(learner.to_device(flipped), torch.from_numpy(flipped.copy()))


def test_a_channels_last_batch_gives_the_same_update():
    learners = []
    for _ in range(2):
        torch.manual_seed(0)
        learners.append(Learner(LearnerConfig(precision="bf16", device="cpu"), 4, stack=2,
                                frame_shape=(36, 36)))
    for seed in range(3):
        batch = _batch(seed=seed, reward=1.0)
        a = learners[0].update(batch, want_td=True)
        b = learners[1].update(_channels_last(batch), want_td=True)
        assert torch.equal(a.stats, b.stats)
        np.testing.assert_array_equal(a.td_abs, b.td_abs)
    for p, q in zip(learners[0].online.parameters(), learners[1].online.parameters(), strict=True):
        assert torch.equal(p, q)
    obs = _batch(seed=9).obs
    assert torch.equal(learners[0].q_values(obs), learners[1].q_values(_channels_last(
        SimpleNamespace(obs=obs, next_obs=obs)).obs))


def test_td_target_clipping_bounds_the_targets():
    reward = torch.tensor([0.0, 1.0, -1.0, 0.5])
    discount = torch.tensor([0.99, 0.99, 0.99, 0.0])
    next_q = torch.tensor([[1e4, 0.0], [10.0, 20.0], [-1e5, -2e5], [1e9, 1e9]])
    y, frac = td_targets(reward, discount, next_q, None, td_clip=50.0)
    assert torch.all(y.abs() <= 50.0)
    assert y.tolist() == pytest.approx([50.0, 1.0 + 0.99 * 20.0, -50.0, 0.5])
    assert float(frac) == pytest.approx(0.5)
    # double DQN: the online network picks the action, the target network values it
    online = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y2, _ = td_targets(reward, discount, next_q, online, td_clip=0.0)
    assert y2.tolist() == pytest.approx([0.0, 1.0 + 0.99 * 10.0, -1.0 - 0.99 * 2e5, 0.5])


def test_watchdog_catches_an_injected_divergence_and_rolls_back(tmp_path):
    trainer = toy_trainer(tmp_path)
    trainer.run(stop_after=600)  # healthy checkpoints at 500 and 600
    healthy = trainer.store.latest_healthy()
    assert healthy is not None and trainer.healthy
    saved = checkpoint.load(healthy)
    # inject: clipping off, learning rate x1000
    trainer.learner.config = dataclasses.replace(trainer.learner.config, max_grad_norm=0.0,
                                                 td_clip=0.0)
    trainer.learner.set_lr(trainer.learner.config.lr * 1000)
    for _ in range(2_000):
        trainer._step()
        trainer._update()
        if trainer.incidents:
            break
    assert trainer.incidents == 1, "the watchdog did not fire"
    # the roll-back restored the healthy weights and re-synced the target
    for name, value in saved["learner"]["online"].items():
        assert torch.equal(trainer.learner.online.state_dict()[name], value), name
        assert torch.equal(trainer.learner.target.state_dict()[name].float(), value), name
    assert trainer.learner.target_age == 0
    rows = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").open()]
    events = [r["event"] for r in rows if "event" in r]
    assert "divergence" in events and "rollback" in events
    (incident,) = (trainer.run_dir / "incidents").glob("incident-*.json")
    record = json.loads(incident.read_text())
    assert record["action"] == "rollback" and record["rollback_to"] == healthy.name
    assert record["reasons"]


def test_watchdog_catches_a_dead_network_and_rolls_back(tmp_path):
    """The failure of too large steps that neither blows up nor learns: every conv unit off,
    the same Q-values for every observation."""
    trainer = toy_trainer(tmp_path)
    trainer.run(stop_after=600)
    healthy = trainer.store.latest_healthy()
    assert trainer.health.last_check["q_state_std"] > 1e-4  # a live network tells them apart
    with torch.no_grad():
        for layer in trainer.learner.online.features:
            if isinstance(layer, torch.nn.Conv2d):
                layer.bias.fill_(-1e4)  # no input can switch a unit on
    for _ in range(2_000):
        trainer._step()
        trainer._update()
        if trainer.incidents:
            break
    (incident,) = (trainer.run_dir / "incidents").glob("incident-*.json")
    record = json.loads(incident.read_text())
    assert any(r.startswith("dead network") for r in record["reasons"]), record["reasons"]
    assert record["metrics"]["q_state_std"] <= 1e-6
    assert record["action"] == "rollback" and record["rollback_to"] == healthy.name
    assert trainer.health.measure()["q_state_std"] > 1e-4  # the restored weights see again


def test_watchdog_halt_stops_the_run(tmp_path):
    trainer = toy_trainer(tmp_path, watchdog={"check_every": 50, "on_divergence": "halt"})
    trainer.run(stop_after=600)
    trainer.learner.config = dataclasses.replace(trainer.learner.config, max_grad_norm=0.0,
                                                 td_clip=0.0)
    trainer.learner.set_lr(trainer.learner.config.lr * 1000)
    trainer._stop_reason = None
    result = trainer.run()
    assert result.state == "halted" and result.steps < 2_000
    assert trainer.store.latest().name == "ckpt-000000000600.pt"  # nothing diverged was saved


def _state(trainer: Trainer) -> dict:
    return {"learner": trainer.learner.state_dict(), "steps": trainer.steps,
            "episodes": trainer.episodes, "scores": list(trainer.scores),
            "replay": trainer.replay.state_dict(), "env": trainer.env.get_state(),
            "explore": trainer.explore_rng.bit_generator.state,
            "checks": [{k: v for k, v in c.items()} for c in trainer.checks]}


def _assert_same(a, b, path="state"):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
    else:
        assert a == b or (a != a and b != b), path  # NaN == NaN here


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path):
    kw = {"run": {"total_steps": 900, "report_seconds": 1e6, "checkpoint_every": 300,
                  "eval_every": 0, "diag_batch": 128, "probe_size": 32, "seed": 5,
                  "save_replay": True}}
    straight = toy_trainer(tmp_path, "straight", **kw)
    straight.run()
    first = toy_trainer(tmp_path, "stopped", **kw)
    stopped = first.run(stop_after=437)  # mid-episode, between checkpoints
    assert stopped.state == "interrupted" and stopped.steps == 437
    resumed = toy_trainer(tmp_path, "stopped", **kw)
    resumed.restore(first.store.latest())
    result = resumed.run()
    assert result.state == "finished" and result.steps == 900
    a, b = _state(straight), _state(resumed)
    b["checks"] = [*[c for c in first.checks if c["steps"] <= 437], *b["checks"]]
    _assert_same(a, b)


def test_a_bf16_run_samples_channels_last_batches_and_equals_a_run_that_permutes(
        tmp_path, monkeypatch):
    kw = {"learner": {"precision": "bf16"},
          "run": {"total_steps": 320, "report_seconds": 1e6, "checkpoint_every": 1_000,
                  "eval_every": 0, "diag_batch": 64, "probe_size": 16, "seed": 2}}
    nhwc = toy_trainer(tmp_path, "nhwc", **kw)
    assert nhwc.learner.channels_last
    nhwc.run()
    assert nhwc.batch.channels_last and nhwc.checks
    assert nhwc.probe.flags.c_contiguous  # the checkpoint's probe stays a plain tensor
    # The same run with (B, stack, H, W) batches, which QNetwork.forward permutes.
    monkeypatch.setattr(Learner, "channels_last", property(lambda self: False))
    nchw = toy_trainer(tmp_path, "nchw", **kw)
    nchw.run()
    assert not nchw.batch.channels_last
    _assert_same(_state(nhwc), _state(nchw))


def test_short_real_rom_run_writes_checkpoints_and_every_diagnostic(tmp_path):
    config = Config().replace(
        env={"game": "breakout"},
        learner={"learning_starts": 128, "train_freq": 4, "threads": 1},
        replay={"capacity": 2_000},
        watchdog={"check_every": 20},
        run={"total_steps": 500, "report_seconds": 1e-9, "checkpoint_every": 250,
             "eval_every": 250, "eval_episodes": 1, "probe_size": 16, "diag_batch": 64},
    )
    trainer = Trainer(config, tmp_path / "rom", tensorboard=True, out=open("/dev/null", "w"))
    result = trainer.run()
    assert result.state == "finished"
    names = sorted(p.name for p in (tmp_path / "rom" / "checkpoints").glob("*.pt"))
    assert names == ["best.pt", "ckpt-000000000250.pt", "ckpt-000000000500.pt"]
    saved = checkpoint.load(result.checkpoint)
    assert saved["game"] == "breakout" and saved["counters"]["steps"] == 500
    assert saved["network"]["n_actions"] == len(trainer.actions)
    rows = [json.loads(line) for line in (tmp_path / "rom" / "metrics.jsonl").open()]
    diag = [r for r in rows if "event" not in r]
    last = diag[-1]
    assert set(ROW_KEYS) <= set(last)
    assert all(last[k] is not None for k in ROW_KEYS), last
    assert set(last["greedy_dist"]) == {"noop", "ZAP", "FIRE", "FIRE+ZAP"}
    assert sum(last["replay_dist"].values()) == pytest.approx(1.0)
    assert last["q_min"] <= last["q_mean"] <= last["q_max"]
    assert 0 <= last["agree"] <= 100 and 0 < last["clip_delta"] <= 1
    assert any(r.get("event") == "eval" for r in rows)
    assert list((tmp_path / "rom").glob("events.out.tfevents.*"))
    assert (tmp_path / "rom" / "config.toml").is_file()


def test_a_replay_larger_than_memory_is_refused_up_front(tmp_path, monkeypatch):
    import agent.train as train_module

    monkeypatch.setattr(train_module, "available_memory", lambda: 8 * 2**30)
    config = toy_config(env={"frame_shape": [84, 84], "stack": 4},
                        replay={"capacity": 2_000_000})
    with pytest.raises(ValueError, match=r"replay.capacity 2,000,000 needs about 13.2 GiB but "
                                         r"8.0 GiB is available; use --capacity 1,094,000"):
        Trainer(config, tmp_path / "big", make_env=make_fire_game, tensorboard=False)
    assert not (tmp_path / "big").exists()
