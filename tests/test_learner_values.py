"""The learner learns the right values: a small MDP whose Q* is known, values bootstrapped over
several steps, learned through the replay's sampler (n-step returns, PER and its importance
weights) and the real update.

The chain: states 0..K-1 drawn as a bright band at column block s. From state 0, action 0 ends
the episode with reward 1 (p = 0.1) or 0 (its Q* is 0.1, in expectation only: the reward's
spread stays inside Huber's quadratic zone, whose fixed point is the mean), action 1 goes to
state 1. From states 1..K-2 either action moves one state right; entering state K-1 pays 1 and
ends the episode. So Q*(s, .) = gamma^(K-2-s) for s >= 1, Q*(0, 1) = gamma^(K-2), Q*(0, 0) =
0.1. Only state 0 has a choice, so an n-step return along any stored episode is unbiased.

What it catches: a target that does not bootstrap (or bootstraps from the wrong state), n-step
discounts off by a step, terminal handling, and PER without its importance weights: proportional
sampling favours the large |TD| of the rare reward, so without the weights Q(0, 0) settles
where 0.1 (1 - Q)^2 = 0.9 Q^2 (alpha 1), at 0.25 instead of 0.1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.config import LearnerConfig
from agent.learner import Learner
from agent.native import FrameReplay

K, GAMMA, HW, STACK = 6, 0.9, 36, 2


def q_star() -> np.ndarray:
    q = np.zeros((K - 1, 2))
    for s in range(1, K - 1):
        q[s] = GAMMA ** (K - 2 - s)
    q[0] = (0.1, GAMMA ** (K - 2))
    return q


def frame(s: int) -> np.ndarray:
    f = np.full((HW, HW), 20, np.uint8)
    width = HW // K
    f[:, s * width:(s + 1) * width] = 230
    return f


def fill(replay: FrameReplay, rng: np.random.Generator, transitions: int) -> None:
    while len(replay) < transitions:
        s = 0
        replay.reset(frame(0))
        while True:
            a = int(rng.integers(2))
            if s == 0 and a == 0:
                replay.add(0, 1.0 if rng.random() < 0.1 else 0.0, True, False, frame(0))
                break
            s += 1
            done = s == K - 1
            replay.add(a, 1.0 if done else 0.0, done, False, frame(s))
            if done:
                break


def learned_q(learner: Learner) -> np.ndarray:
    obs = np.stack([np.stack([frame(max(s - 1, 0)), frame(s)]) for s in range(K - 1)])
    with torch.no_grad():
        return learner.q_values(obs).float().numpy()


# Each flag on and off once (each case takes about 40 s on two cores).
@pytest.mark.parametrize("n_step, double, prioritized", [(3, True, False), (1, False, True)])
def test_the_learned_values_are_q_star(n_step, double, prioritized):
    torch.manual_seed(0)
    learner = Learner(LearnerConfig(lr=5e-4, gamma=GAMMA, n_step=n_step, double_dqn=double,
                                    target_update=100, precision="fp32", device="cpu",
                                    threads=1), 2, STACK, (HW, HW))
    replay = FrameReplay(4_000, (HW, HW), STACK, n_step, GAMMA, prioritized, 1.0, seed=1)
    fill(replay, np.random.default_rng(2), 3_000)
    updates = 3_000
    for i in range(updates):
        # beta rises to 1 (full correction) over the first half, as run.total_steps anneals it
        batch = replay.sample(64, beta=min(1.0, 0.4 + 1.2 * i / updates))
        result = learner.update(batch, want_td=prioritized)
        if prioritized:
            replay.update_priorities(batch.index, result.td_abs + 1e-6)
    # Late updates move Q(0, 0) by a noisy target (0 or 1); a small step averages them.
    learner.set_lr(5e-5)
    for _ in range(1_000):
        batch = replay.sample(64, beta=1.0)
        result = learner.update(batch, want_td=prioritized)
        if prioritized:
            replay.update_priorities(batch.index, result.td_abs + 1e-6)
    q = learned_q(learner)
    np.testing.assert_allclose(q[1:], q_star()[1:], atol=0.05)
    assert abs(q[0, 1] - q_star()[0, 1]) < 0.05, q[0]
    assert abs(q[0, 0] - 0.1) < 0.06, q[0]
