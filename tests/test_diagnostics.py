"""The watchdog's rules, one by one, and the button marginals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.config import WatchdogConfig
from agent.diagnostics import Watchdog, agreement, button_distribution
from agent.network import QNetwork


def healthy(**changes):
    m = {"loss": 0.05, "grad_norm": 1.0, "q_min": -0.5, "q_max": 2.0, "agree": 90.0}
    m.update(changes)
    return m


def warmed(**cfg) -> Watchdog:
    dog = Watchdog(WatchdogConfig(**cfg))
    for i in range(10):
        assert dog.check(healthy(loss=0.05 + 0.001 * i)) == []
    return dog


def test_a_steady_run_raises_nothing():
    dog = warmed()
    assert dog.plateau == pytest.approx(90.0)


@pytest.mark.parametrize("changes, words", [
    ({"loss": float("nan")}, "loss is nan"),
    ({"grad_norm": float("inf")}, "gradient norm is inf"),
    ({"q_max": float("nan")}, "Q-values are not finite"),
    ({"loss": 0.05 * 60}, "loss explosion"),
    ({"q_max": 150.0}, "Q blow-up"),
    ({"q_min": -9827.0}, "Q blow-up"),
    ({"q_state_std": 0.0}, "dead network: the Q-values no longer depend on the observation"),
])
def test_each_rule_fires(changes, words):
    assert any(words in r for r in warmed().check(healthy(**changes)))


def test_the_first_rewards_after_a_silent_start_are_no_loss_explosion():
    """Before a game's first rewards the loss is near 0: the first rewarded transitions raise it
    a hundredfold (a sparse game's, or Breakout's after a resume refilled its replay) without
    anything wrong, so the rule also needs the loss above loss_floor."""
    dogs = Watchdog(WatchdogConfig()), Watchdog(WatchdogConfig(loss_floor=0.0))
    for dog in dogs:
        for _ in range(10):
            assert dog.check(healthy(loss=1e-4)) == []
    floor, no_floor = dogs
    assert floor.check(healthy(loss=0.0121)) == []  # 121x the median, under the floor
    assert any("loss explosion" in r for r in no_floor.check(healthy(loss=0.0121)))
    assert any("loss explosion" in r and "loss_floor 1" in r
               for r in floor.check(healthy(loss=1.5)))


def test_a_network_that_still_tells_observations_apart_is_not_dead():
    assert warmed().check(healthy(q_state_std=1e-3)) == []
    assert warmed().check(healthy(q_state_std=None)) == []  # a probe of one screen: not judged
    assert warmed(dead_q_std=0.0).check(healthy(q_state_std=0.0)) == []  # the rule turned off


def test_nan_weights_fire():
    assert warmed().check(healthy(), weights_finite=False) == ["network weights hold NaN/Inf"]


def test_agreement_collapse_needs_the_smoothed_value_to_fall_30_points():
    dog = warmed()
    assert dog.check(healthy(agree=10.0)) == []  # one low check: the median of 5 holds
    assert dog.check(healthy(agree=10.0)) == []
    reasons = dog.check(healthy(agree=10.0))  # the median of the last five is now 10
    assert reasons and "agreement collapse" in reasons[0] and "plateau 90.0" in reasons[0]


def test_a_loss_that_grows_slowly_is_not_an_explosion():
    dog = warmed()
    loss = 0.05
    for _ in range(40):
        loss *= 1.1
        assert dog.check(healthy(loss=loss)) == []


def test_state_round_trip():
    dog = warmed()
    other = Watchdog(WatchdogConfig())
    other.load_state_dict(dog.state_dict())
    assert other.check(healthy(loss=3.0)) == dog.check(healthy(loss=3.0))


def test_button_distribution_marginalises_movement():
    buttons = np.array([0, 1, 2, 3] * 3)  # three movements x four buttons
    actions = np.array([2, 6, 10, 11, 0])  # FIRE in each movement, one FIRE+ZAP, one noop
    d = button_distribution(actions, buttons)
    assert d == {"noop": 0.2, "ZAP": 0.0, "FIRE": 0.6, "FIRE+ZAP": 0.2}
    assert agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0])) == 50.0


def test_network_shapes_and_dueling_head():
    for dueling in (False, True):
        net = QNetwork(12, dueling=dueling)
        q = net(torch.zeros(5, 4, 84, 84, dtype=torch.uint8))
        assert q.shape == (5, 12)
        assert QNetwork.from_spec(net.spec()).spec() == net.spec()
    assert sum(p.numel() for p in QNetwork(18).parameters()) == 1_693_362  # Nature DQN's size


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_computes_the_modules_on_inputs_scaled_to_0_1(dueling, channels_last):
    # forward() runs the layers as functions with conv1's weights scaled by 1/255; it must be
    # the network its modules (and checkpoints) describe, applied to obs / 255.
    torch.manual_seed(0)
    net = QNetwork(6, dueling=dueling)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        features = net.features(obs.float() / 255.0)
        if dueling:
            adv = net.advantage(features)
            expected = net.value(features) + adv - adv.mean(dim=1, keepdim=True)
        else:
            expected = net.head(features)
        torch.testing.assert_close(net(obs), expected, rtol=1e-4, atol=1e-5)
