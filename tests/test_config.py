"""Config: TOML and flags reach every field; bad values are refused with a message naming them."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from agent.cli import build_parser, config_overrides
from agent.config import SECTIONS, Config, dump_toml, field_docs, from_dict, load_toml


def test_defaults_round_trip_through_toml():
    config = Config().validate()
    assert from_dict(tomllib.loads(dump_toml(config))) == config


def test_every_field_is_documented_and_has_a_flag():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train._actions}
    for section in SECTIONS:
        cls = type(getattr(Config(), section))
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            assert docs.get(f.name), f"{section}.{f.name} has no docstring"
            assert f"{section}.{f.name}" in dests, f"no flag for {section}.{f.name}"


def test_flags_override_the_toml_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[learner]\nlr = 3e-4\nbatch_size = 64\n[env]\ngame = "breakout"\n')
    args = build_parser().parse_args(["train", "--config", str(path), "--batch-size", "16",
                                      "--no-double-dqn", "--frame-shape", "42,42"])
    config = load_toml(path, config_overrides(args))
    assert config.learner.lr == 3e-4 and config.learner.batch_size == 16
    assert config.learner.double_dqn is False and config.env.game == "breakout"
    assert config.env.frame_shape == (42, 42)


@pytest.mark.parametrize("text, message", [
    ("[learner]\nlrr = 1\n", "unknown key(s) learner.lrr"),
    ("[learnr]\nlr = 1\n", "unknown section(s) 'learnr'"),
    ("[learner]\nlr = -0.1\n", "learner.lr must be a number in (0.0, 1.0], got -0.1"),
    ("[learner]\nlr = \"fast\"\n", "learner.lr must be a number, got 'fast'"),
    ("[learner]\ngamma = 1.5\n", "learner.gamma must be a number in [0.0, 1.0], got 1.5"),
    ("[learner]\nbatch_size = 64\n[replay]\ncapacity = 32\n",
     "learner.batch_size (64) must not exceed replay.capacity (32)"),
    ("[learner]\ndouble_dqn = 1\n", "learner.double_dqn must be true or false, got 1"),
    ("[env]\ngame = \"pongg\"\n", "pongg"),
    ("[learner\n", "is not valid TOML"),
])
def test_bad_toml_is_refused_by_name(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load_toml(path)
    assert message in str(info.value)


def test_epsilon_is_random_until_learning_starts_then_decays_linearly():
    explore = Config().explore
    assert explore.epsilon(0) == 1.0
    assert explore.epsilon(explore.eps_decay_steps // 2) == pytest.approx(0.505)
    assert explore.epsilon(10**9) == explore.eps_end
    assert explore.epsilon(999, learning_starts=1_000) == 1.0
    assert explore.epsilon(1_000 + explore.eps_decay_steps // 2, learning_starts=1_000) == \
        pytest.approx(0.505)


def test_the_step_size_decays_linearly_from_learning_starts_when_asked():
    assert Config().learner.lr_at(10**9) == Config().learner.lr  # default: constant
    learner = Config().replace(learner={"lr": 1e-4, "lr_end": 2e-5, "lr_decay_steps": 1_000,
                                        "learning_starts": 500}).learner
    assert learner.lr_at(0) == learner.lr_at(500) == pytest.approx(1e-4)
    assert learner.lr_at(1_000) == pytest.approx(6e-5)
    assert learner.lr_at(1_500) == learner.lr_at(10**9) == pytest.approx(2e-5)
    with pytest.raises(ValueError, match=r"learner.lr_end must not exceed learner.lr \(0.0001\)"
                                         r" for a decay, got 0.001"):
        Config().replace(learner={"lr_end": 1e-3, "lr_decay_steps": 10})


def test_per_beta_reaches_its_end_at_beta_steps_or_the_run_s_last_step():
    replay = Config().replay
    assert replay.beta(0, 1_000) == pytest.approx(0.4)
    assert replay.beta(500, 1_000) == pytest.approx(0.7)
    assert replay.beta(5_000, 1_000) == pytest.approx(1.0)
    short = Config().replace(replay={"beta_steps": 100}).replay
    assert short.beta(50, 10**7) == pytest.approx(0.7)
    assert short.beta(100, 10**7) == short.beta(10**6, 10**7) == pytest.approx(1.0)


def test_raw_rewards_with_bounds_sized_for_clipped_ones_are_refused():
    """With --no-clip-rewards the default TD clip would silently cap every target at 50 and the
    Q alarm would roll back a healthy run: both bounds must be set for the game's scale."""
    with pytest.raises(ValueError, match=r"learner.td_clip = 50 and watchdog.q_limit = 100 are"):
        Config().replace(env={"clip_rewards": False})
    with pytest.raises(ValueError, match=r"watchdog.q_limit = 100 is sized for clipped"):
        Config().replace(env={"clip_rewards": False}, learner={"td_clip": 0.0})
    config = Config().replace(env={"clip_rewards": False}, learner={"td_clip": 0.0},
                              watchdog={"q_limit": 1e6})
    assert (config.learner.td_clip, config.watchdog.q_limit) == (0.0, 1e6)
    args = build_parser().parse_args(["train", "--no-clip-rewards", "--td-clip", "2000",
                                      "--q-limit", "1e5"])
    assert Config().replace(**config_overrides(args)).learner.td_clip == 2000


def test_a_q_alarm_at_or_below_the_td_clip_is_refused():
    with pytest.raises(ValueError, match=r"q_limit \(50\) must exceed learner.td_clip \(50\)"):
        Config().replace(watchdog={"q_limit": 50.0})
    assert Config().replace(watchdog={"q_limit": 50.0}, learner={"td_clip": 0.0})


@pytest.mark.parametrize("keeps", ["loss_history", "agree_window"])
def test_a_watchdog_rule_that_could_never_fire_is_refused(keeps):
    with pytest.raises(ValueError, match=rf"min_history \(6\) exceeds watchdog.{keeps} \(5\)"):
        Config().replace(watchdog={"min_history": 6, keeps: 5,
                                   **({"agree_window": 6} if keeps == "loss_history" else {})})
    assert Config().replace(watchdog={"min_history": 5, keeps: 5})
