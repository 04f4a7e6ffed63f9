"""learner.shared_outputs: documented actions that press the same ALE action (the +ZAP twins of a
game whose ZAP is inert) read one network output, so they always have one Q-value, learn from
each other's samples, and the greedy policy picks the twin without ZAP. The network still hands
back one Q-value per action index, so replay, logs and play keep the documented vocabulary."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agent import checkpoint
from agent.checkpoint import CheckpointError
from agent.config import Config, LearnerConfig, dump_toml, load_toml
from agent.evaluate import checkpoint_targets, evaluate
from agent.games import action_set
from agent.learner import Learner
from agent.network import QNetwork
from agent.policy import load_agent
from agent.train import Trainer, check_resume

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_documented_set_numbers_its_distinct_ale_actions():
    breakout = action_set("breakout", "documented")
    assert breakout.outputs() == (0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5)
    # each twin presses exactly the ALE action of its first index
    for index, out in enumerate(breakout.outputs()):
        assert breakout.ale_names[index] == breakout.ale_names[breakout.outputs().index(out)]
    # Phoenix: ZAP (the shield) alone is its own action; moving with ZAP plays as the move
    phoenix = action_set("phoenix", "documented")
    assert phoenix.outputs() == (0, 1, 2, 3, 4, 4, 5, 5, 6, 6, 7, 7)
    assert phoenix.ale_names[5] == "DOWNLEFT" and phoenix.plays_as[5] == "LEFT"
    assert len(set(phoenix.outputs())) == len(action_set("phoenix", "minimal"))
    minimal = action_set("breakout", "minimal")
    assert minimal.outputs() == tuple(range(len(minimal)))
    # the network shares rows only where indices repeat: a minimal set keeps one row per index
    assert breakout.network_outputs(True) == breakout.outputs()
    assert breakout.network_outputs(False) is None
    assert minimal.network_outputs(True) is None and minimal.network_outputs(False) is None


@pytest.mark.parametrize("dueling", [False, True])
def test_twins_read_one_output_and_the_spec_rebuilds_the_network(dueling):
    outputs = action_set("breakout", "documented").outputs()
    torch.manual_seed(0)
    net = QNetwork(12, 2, (36, 36), dueling, outputs)
    last = net.advantage[2] if dueling else net.head[2]
    assert last.out_features == 6  # one row per distinct ALE action
    assert "expand" not in net.state_dict()  # the spec records the mapping, not the weights
    obs = torch.randint(0, 256, (5, 2, 36, 36), dtype=torch.uint8)
    q = net(obs)
    assert q.shape == (5, 12)
    assert torch.equal(q[:, 0::2], q[:, 1::2])  # each +ZAP twin has its twin's value
    assert not torch.equal(q[:, 0], q[:, 2])
    assert (q.argmax(dim=1) % 2 == 0).all()  # greedy: the twin without ZAP
    spec = net.spec()
    assert spec["outputs"] == list(outputs)
    again = QNetwork.from_spec(spec)
    again.load_state_dict(net.state_dict())
    assert torch.equal(again(obs), q)
    # a network without sharing keeps the spec it always had (old checkpoints still match)
    assert "outputs" not in QNetwork(12, 2, (36, 36), dueling).spec()


@pytest.mark.parametrize("outputs", [(0, 0, 1), (0, 0, 2, 2), (1, 1, 2, 2), (0, -1, 0, 1)])
def test_a_mapping_that_skips_or_misses_an_output_is_refused(outputs):
    with pytest.raises(ValueError, match=r"outputs must give each of the 4 actions an output"):
        QNetwork(4, 2, (36, 36), outputs=outputs)


def test_an_update_on_one_twin_moves_the_other_alike():
    torch.manual_seed(0)
    learner = Learner(LearnerConfig(precision="fp32", device="cpu", lr=1e-3), 4, 2, (36, 36),
                      outputs=(0, 0, 1, 1))
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (8, 2, 36, 36), dtype=np.uint8)
    before = learner.q_values(obs).clone()
    batch = SimpleNamespace(obs=obs, next_obs=obs.copy(), action=np.ones(8, np.int64),
                            reward=np.full(8, 1.0, np.float32),
                            discount=np.zeros(8, np.float32), weight=np.ones(8, np.float32))
    for _ in range(5):
        learner.update(batch)
    after = learner.q_values(obs)
    assert torch.equal(after[:, 0], after[:, 1]) and torch.equal(after[:, 2], after[:, 3])
    # trained only through action 1, action 0 rose toward the reward of 1 with it
    assert (after[:, 0] - before[:, 0]).mean() > 0.05
    assert learner.act(obs[0]) in (0, 2)


def test_a_run_with_shared_outputs_saves_plays_and_refuses_a_resume_without_them(tmp_path):
    """A short real Breakout run on the documented set with the defaults (shared outputs on):
    its checkpoint records the mapping, is evaluated under the protocol, and only a run that
    shares outputs may continue it."""
    assert Config().learner.shared_outputs
    config = Config().replace(
        env={"game": "breakout", "action_set": "documented"},
        learner={"learning_starts": 64, "threads": 1},
        replay={"capacity": 1_000},
        run={"total_steps": 200, "checkpoint_every": 200, "report_seconds": 1e9,
             "probe_size": 16, "diag_batch": 32},
    )
    result = Trainer(config, tmp_path / "run", tensorboard=False,
                     out=open("/dev/null", "w")).run()
    assert result.state == "finished"
    saved = checkpoint.load(result.checkpoint)
    assert saved["network"]["outputs"] == list(action_set("breakout", "documented").outputs())
    agent = load_agent(result.checkpoint)
    q = agent.network(torch.zeros(1, 4, 84, 84, dtype=torch.uint8))
    assert q.shape == (1, 12) and torch.equal(q[:, 0::2], q[:, 1::2])
    (r,) = evaluate(checkpoint_targets([result.checkpoint], {}), 1, 0, 0.001, 1)
    assert r["episodes"] == 1 and r["mean"] >= 0
    assert check_resume(config, result.checkpoint).learner.shared_outputs
    with pytest.raises(CheckpointError, match="holds a different network"):
        check_resume(config.replace(learner={"shared_outputs": False}), result.checkpoint)


def test_a_run_saved_before_the_option_resumes_as_it_trained(tmp_path):
    """A run's config.toml from before learner.shared_outputs existed has no such key: it trained
    with one output per action, so its resume keeps that (the old default), while a settings
    file or preset without the key takes today's default, and the command line still decides."""
    old = tmp_path / "config.toml"
    old.write_text('[env]\ngame = "breakout"\naction_set = "documented"\n\n'
                   '[learner]\nlr = 0.0001\n')
    assert not load_toml(old, saved_run=True).learner.shared_outputs
    assert load_toml(old).learner.shared_outputs
    assert load_toml(old, {"learner": {"shared_outputs": True}},
                     saved_run=True).learner.shared_outputs
    written = tmp_path / "written.toml"
    written.write_text(dump_toml(Config()))  # what a run writes today: every key
    assert load_toml(written, saved_run=True).learner.shared_outputs
