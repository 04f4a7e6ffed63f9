"""The worker pool: same trajectories as serial envs, auto-reset, failures named, no orphans.

Both layouts are covered: env 0 in the calling process (inline_first, the default) and every
env in a worker (inline_first=False); and both ways of waiting: the shared doorbell words (x86-64)
and the pipes alone (elsewhere; here by switching `agent.wire.DOORBELL` off)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from agent import wire
from agent.config import EnvConfig
from agent.env import AtariEnv
from agent.workers import VecEnv, WorkerError, WorkerValueError
from tests.procs import closing_pools, proc_running, wait_gone

ROOT = Path(__file__).resolve().parents[1]
SHORT = 400  # emulator frames: an episode is truncated after about 100 agent steps


INLINE = pytest.mark.parametrize("inline_first", [True, False], ids=["inline", "all-workers"])


def our_children(vec: VecEnv) -> list:
    return [p for p in multiprocessing.active_children() if p.pid in vec.pids]


@pytest.fixture
def make_vec():
    """Builds VecEnvs and always closes them; afterwards none of their workers runs."""
    def build(config=None, num_envs=2, **kwargs) -> VecEnv:
        return VecEnv(config or EnvConfig(max_frames=SHORT), num_envs, **kwargs)

    with closing_pools(build) as make:
        yield make


def serial_trajectory(config: EnvConfig, seed: int, actions: np.ndarray):
    """What a serial AtariEnv does with the VecEnv's auto-reset, one record per step.

    Frames go through `out`, as the workers do it (and as a replay ring does).
    """
    env = AtariEnv(config, seed)
    frame = np.empty(config.frame_shape, np.uint8)
    first = env.reset(out=frame).copy()
    records = []
    for a in actions:
        s = env.step(int(a), out=frame)
        final = episode = None
        if s.terminated or s.truncated:
            final = frame.copy()
            episode = (env.episode_score, env.episode_steps)
            env.reset(out=frame)
        records.append((s, env.observation.copy(), final, episode))
    return first, records


@INLINE
@pytest.mark.parametrize("config", [
    pytest.param(EnvConfig(game="phoenix", max_frames=SHORT), id="phoenix-documented"),
    pytest.param(EnvConfig(game="breakout", action_set="minimal", max_frames=SHORT,
                           terminal_on_life_loss=True), id="breakout-minimal"),
])
def test_workers_match_serial_envs_across_auto_resets(make_vec, config, inline_first):
    n, steps, seed = 2, 150, 7
    vec = make_vec(config, n, seed=seed, inline_first=inline_first)
    serial = AtariEnv(config, 0)
    assert vec.actions == serial.actions and len(vec.actions) == len(serial.actions)
    actions = np.random.default_rng(3).integers(0, len(vec.actions), (steps, n))
    expected = [serial_trajectory(config, seed + i, actions[:, i]) for i in range(n)]

    obs = vec.reset()
    assert obs is vec.obs and obs.shape == (n, 4, 84, 84) and obs.dtype == np.uint8
    for i in range(n):
        np.testing.assert_array_equal(vec.obs[i], expected[i][0])
        np.testing.assert_array_equal(vec.frames[i], expected[i][0][-1])
    ends = 0
    for t in range(steps):
        before = vec.obs.copy()
        out = vec.step(actions[t])
        assert out.reward.dtype == np.float32 and out.terminated.dtype == np.bool_
        assert out.reward.shape == (n,)
        scores = {}
        for i in range(n):
            s, stack, final, episode = expected[i][1][t]
            assert out.reward[i] == np.float32(s.reward)
            assert out.raw_reward[i] == np.float32(s.raw_reward)
            assert (out.terminated[i], out.truncated[i], out.life_lost[i],
                    out.learn_terminal[i]) == (s.terminated, s.truncated, s.life_lost,
                                               s.learn_terminal), (t, i)
            np.testing.assert_array_equal(vec.obs[i], stack, err_msg=f"step {t} env {i}")
            np.testing.assert_array_equal(vec.frames[i], stack[-1])
            if final is None and not s.learn_terminal:  # moved up one frame, oldest first
                np.testing.assert_array_equal(vec.obs[i, :-1], before[i, 1:])
            elif final is None:  # a life lost as a learning terminal: the stack the replay
                assert (vec.obs[i] == vec.frames[i]).all()  # starts anew, padded with it
            else:  # a new episode: its first frame, repeated
                assert (vec.obs[i] == vec.frames[i]).all()
                np.testing.assert_array_equal(vec.final_frames[i], final)
                scores[i] = episode
        assert out.ended.tolist() == [i in scores for i in range(n)]
        assert {i: (score, length) for i, score, length in out.episode_scores} == scores
        ends += len(scores)
    assert ends >= n  # every env went through at least one auto-reset


@pytest.mark.parametrize("method, spin", [("spawn", 0.001), ("fork", 0.001),
                                          ("forkserver", 0.0)])
def test_other_start_methods_and_no_spin_give_the_same_frames(make_vec, method, spin):
    config = EnvConfig(max_frames=SHORT)
    vec = make_vec(config, 2, seed=1, start_method=method, spin=spin)
    assert vec.start_method == method
    actions = np.random.default_rng(0).integers(0, len(vec.actions), (20, 2))
    expected = serial_trajectory(config, 2, actions[:, 1])[1]
    vec.reset()
    for t in range(20):
        vec.step(actions[t])
        np.testing.assert_array_equal(vec.obs[1], expected[t][1])


@INLINE
@pytest.mark.parametrize("doorbell", [True, False], ids=["doorbell", "pipe-only"])
def test_sleeping_and_spinning_sides_keep_every_command_in_order(make_vec, monkeypatch,
                                                                 doorbell, inline_first):
    """Pauses longer than `spin` make the waiting sides sleep (with the doorbell: set their
    sleep flags, to be woken by a wake message); an error after all that still names its
    worker."""
    import agent.wire

    monkeypatch.setattr(agent.wire, "DOORBELL", doorbell)
    config = EnvConfig(max_frames=SHORT)
    n, steps, seed = 3, 200, 4
    vec = make_vec(config, n, seed=seed, inline_first=inline_first)
    assert vec._doorbell is doorbell
    actions = np.random.default_rng(9).integers(0, len(vec.actions), (steps, n))
    expected = [serial_trajectory(config, seed + i, actions[:, i]) for i in range(n)]
    vec.reset()
    for t in range(steps):
        if t % 37 == 5:
            time.sleep(0.005)  # longer than the 1 ms spin: every side goes to sleep
        out = vec.step(actions[t])
        for i in range(n):
            s, stack, _, _ = expected[i][1][t]
            assert out.raw_reward[i] == np.float32(s.raw_reward), (t, i)
            np.testing.assert_array_equal(vec.obs[i], stack, err_msg=f"step {t} env {i}")
    with pytest.raises(WorkerValueError, match=r"worker 2 .*action must be an int"):
        vec._step([0, 0, 99])
    assert vec.closed and wait_gone(vec.pids) == []


def test_the_pool_block_sleep_flags_follow_the_protocol():
    """The native half of the wake protocol, in one process: a waiter that gives up spinning
    sets its flag (left set while it sleeps), the other side's ring/publish reports it, and a
    look that finds its word clears it."""
    from agent.native import PoolBlock

    n = 3
    cmd, ack = np.zeros((n, 8), np.int64), np.zeros((n, 8), np.int64)
    rewards, flags = np.zeros((2, n), np.float32), np.zeros((4, n), np.bool_)
    parent = PoolBlock(cmd, ack, rewards, flags, 1)  # workers are envs 1 and 2
    worker = PoolBlock(cmd, ack, rewards, flags, 0)
    assert parent.ring(1 << 32 | 1 << 24, [0, 5, 6]) == 0  # nobody sleeps
    assert cmd[1, 0] == (1 << 32 | 1 << 24 | 5) and cmd[2, 0] == (1 << 32 | 1 << 24 | 6)
    assert worker.wait_command(1, 1, 0.0) == cmd[1, 0] and not worker.asleep
    assert worker.wait_command(1, 2, 0.001) == -1 and worker.asleep and ack[1, 1] == 1
    assert parent.sleeping(1) and not parent.sleeping(2)
    assert parent.ring(2 << 32 | 2 << 24) == 1  # worker 1 sleeps: the parent must wake it
    assert worker.wait_command(1, 2, 0.0) == 2 << 32 | 2 << 24 and not worker.asleep
    assert ack[1, 1] == 0

    assert parent.wait_acks(2, 0.0) == -1 and parent.asleep  # nobody answered: flags set
    assert (cmd[1:, 1] == 1).all()
    assert worker.publish(1, 2 << 1 | 1)  # the parent sleeps: wake it
    assert parent.wait_acks(2, 0.0) == -1 and parent.acked(1, 2) and not parent.acked(2, 2)
    assert worker.publish(2, 2 << 1)
    assert parent.wait_acks(2, 0.0) == 1 and not parent.asleep  # one episode ended
    assert parent.ended(1) and not parent.ended(2) and (cmd[:, 1] == 0).all()
    assert not worker.publish(2, 2 << 1)  # awake again: no wake message
    started = time.perf_counter()
    assert parent.wait_acks(3, 0.02) == -1  # spins (yielding) about `spin`, then gives up
    assert 0.015 < time.perf_counter() - started < 1.0

    class Step:
        reward, raw_reward = 1.0, -2.5
        terminated, truncated, life_lost, learn_terminal = False, True, False, True

    assert worker.store_step(2, Step())
    assert rewards[:, 2].tolist() == [1.0, -2.5]
    assert flags[:, 2].tolist() == [False, True, False, True] and not flags[:, :2].any()
    rows = parent.results()  # new arrays, one per row, that later steps leave alone
    assert [r.dtype for r in rows] == [np.float32] * 2 + [np.bool_] * 4
    assert [r.tolist() for r in rows] == [*rewards.tolist(), *flags.tolist()]
    rewards[:] = 7
    assert rows[0].tolist() == [0.0, 0.0, 1.0] and all(r.flags.owndata for r in rows)
    with pytest.raises(IndexError):
        worker.store_step(3, Step())


@INLINE
def test_sides_that_sleep_at_every_wait_are_woken_by_the_step_and_the_ack(make_vec, monkeypatch,
                                                                        inline_first):
    """A spin of a microsecond: a wait of more than that, on either side, ends asleep with its
    flag set, so the commands and the acks are delivered by wake messages (the workers' steps
    are slowed by 1 ms, pauses here let them fall asleep); same frames as serial envs."""
    import agent.wire

    if not agent.wire.DOORBELL:
        pytest.skip("the doorbell is used on x86-64 only")
    woken, wakes = [0], [0]
    real_wake, real_read = VecEnv._wake, VecEnv._read_reply

    def wake(self):
        woken[0] += 1
        real_wake(self)

    def read(self, k, what):
        reply = real_read(self, k, what)
        wakes[0] += reply == agent.wire.WAKE
        return reply

    parent, real_step = os.getpid(), AtariEnv.step

    def slow_step(self, action, out=None):
        if os.getpid() != parent:
            time.sleep(0.001)  # a worker's step: the parent waiting for it goes to sleep
        return real_step(self, action, out)

    monkeypatch.setattr(VecEnv, "_wake", wake)
    monkeypatch.setattr(VecEnv, "_read_reply", read)
    monkeypatch.setattr(AtariEnv, "step", slow_step)  # ("fork": the workers inherit it)
    config = EnvConfig(max_frames=SHORT)
    n, steps, seed = 3, 120, 11
    vec = make_vec(config, n, seed=seed, spin=1e-6, inline_first=inline_first,
                   start_method="fork")
    assert vec._doorbell
    actions = np.random.default_rng(2).integers(0, len(vec.actions), (steps, n))
    expected = [serial_trajectory(config, seed + i, actions[:, i]) for i in range(n)]
    vec.reset()
    for t in range(steps):
        if t % 4 == 0:
            time.sleep(0.002)  # the workers are asleep when this step comes
        out = vec.step(actions[t])
        for i in range(n):
            s, stack, final, episode = expected[i][1][t]
            assert out.raw_reward[i] == np.float32(s.raw_reward), (t, i)
            assert out.ended[i] == (final is not None), (t, i)
            np.testing.assert_array_equal(vec.obs[i], stack, err_msg=f"step {t} env {i}")
    # The parent found sleeping workers and woke them (at least after each pause; how often
    # otherwise depends on the scheduling of the busy machine); it slept on the slow workers
    # and an ack's wake message woke it.
    assert woken[0] >= steps // 8
    assert wakes[0] >= steps // 2


def stop_and_step(vec: VecEnv, victim: int, match: str, low: float, high: float) -> WorkerError:
    """SIGSTOP `victim` (a pid this pool started), step, and return the WorkerError that the step
    raised between `low` and `high` seconds later."""
    os.kill(victim, signal.SIGSTOP)
    start = time.monotonic()
    with pytest.raises(WorkerError, match=match) as info:
        vec.step([1, 1])
    elapsed = time.monotonic() - start
    assert low < elapsed < high, elapsed
    return info.value


def test_a_worker_stopped_while_the_parent_spins_is_reported_within_the_timeout(make_vec):
    vec = make_vec(timeout=1, spin=0.5)  # the parent spins half the timeout before sleeping
    vec.reset()
    for _ in range(3):
        vec.step([1, 1])
    victim = vec.pids[0]
    error = stop_and_step(vec, victim, "did not answer within 1 s during step", 0.9, 2.5)
    assert error.index == 1 and error.pid == victim
    assert vec.closed and wait_gone(vec.pids) == []


@pytest.mark.parametrize("doorbell", [True, False], ids=["doorbell", "pipe-only"])
def test_a_worker_killed_while_the_parent_sleeps_is_reported_at_once(make_vec, monkeypatch,
                                                                    doorbell):
    import threading

    import agent.wire

    monkeypatch.setattr(agent.wire, "DOORBELL", doorbell)
    vec = make_vec(timeout=30, spin=1e-6, inline_first=False)
    vec.reset()
    vec.step([0, 0])
    victim = vec.env_pids[1]
    os.kill(victim, signal.SIGSTOP)  # it cannot answer: the parent goes to sleep
    killer = threading.Timer(0.3, os.kill, (victim, signal.SIGKILL))
    killer.start()
    start = time.monotonic()
    try:
        with pytest.raises(WorkerError, match=r"worker 1 .*(died|closed its pipe) during "
                                              r"step.*SIGKILL"):
            vec.step([0, 0])
    finally:
        killer.cancel()
        killer.join()
    assert 0.25 < time.monotonic() - start < 5
    assert vec.closed and wait_gone(vec.pids) == []


def test_stray_wake_messages_are_discarded(make_vec):
    """Wake messages that find their worker awake (or nothing to do) change nothing."""
    import agent.wire

    config = EnvConfig(max_frames=SHORT)
    vec = make_vec(config, 2, seed=5, spin=1e-6)
    actions = np.random.default_rng(4).integers(0, len(vec.actions), (30, 2))
    expected = serial_trajectory(config, 6, actions[:, 1])[1]
    vec.reset()
    for t in range(30):
        if t % 3 == 0:
            for _ in range(t % 7 + 1):
                os.write(vec._fds[0], agent.wire.WAKE_CMD_FRAME)
        vec.step(actions[t])
        np.testing.assert_array_equal(vec.obs[1], expected[t][1], err_msg=f"step {t}")


@INLINE
def test_step_async_then_step_wait_is_one_step(make_vec, inline_first):
    config = EnvConfig(max_frames=SHORT)
    plain = make_vec(config, seed=3, inline_first=inline_first)
    split = make_vec(config, seed=3, inline_first=inline_first)
    actions = np.random.default_rng(5).integers(0, len(plain.actions), (30, 2))
    plain.reset()
    split.reset()
    for t in range(30):
        a = plain.step(actions[t])
        split.step_async(actions[t])
        b = split.step_wait()
        np.testing.assert_array_equal(plain.obs, split.obs)
        assert a.raw_reward.tolist() == b.raw_reward.tolist()
        assert a.ended.tolist() == b.ended.tolist()
    split.step_async([0, 0])
    with pytest.raises(RuntimeError, match="step_wait"):
        split.step_async([0, 0])
    with pytest.raises(RuntimeError, match="step_wait"):
        split.reset()
    split.step_wait()
    with pytest.raises(RuntimeError, match="step_async"):
        split.step_wait()
    assert not split.closed


FREE = pytest.mark.skipif(not wire.DOORBELL,
                          reason="free runs drive the doorbell words, used on x86-64 only")


def wait_answered(free, i: int) -> None:
    """Until env i of a free run answered (a guard against a hang, not a timing check)."""
    deadline = time.monotonic() + 30
    while not free.answered(i):
        assert time.monotonic() < deadline, f"env {i} did not answer within 30 s"
        os.sched_yield()


@FREE
@INLINE
def test_a_free_run_steps_each_env_at_its_own_pace_on_its_serial_trajectory(make_vec,
                                                                          inline_first):
    """Env i is sent a step every (i + 1)-th round only: each env still plays its serial
    trajectory; close() levels the workers with catch-up steps and lock step goes on."""
    config = EnvConfig(max_frames=SHORT)
    n, rounds, seed = 3, 120, 5  # env 0's episode is truncated after about 100 steps
    vec = make_vec(config, n, seed=seed, inline_first=inline_first)
    rng = np.random.default_rng(8)
    actions = rng.integers(0, len(vec.actions), (rounds, n))
    after = rng.integers(0, len(vec.actions), (10, n))  # lock step after the free run
    vec.reset()
    done = [0] * n
    ends = 0

    def check(i: int) -> None:  # env i's last answered step against its serial run
        nonlocal ends
        s, stack, _, episode = serial[i][done[i] - 1]
        np.testing.assert_array_equal(vec.obs[i], stack, err_msg=f"env {i} step {done[i]}")
        assert free.results().raw_reward[i] == np.float32(s.raw_reward)
        assert free.episode(i) == episode
        ends += episode is not None

    serial = [serial_trajectory(config, seed + i, actions[:, i])[1] for i in range(n)]
    with vec.free_run() as free:
        assert list(free.workers) == list(range(1 if inline_first else 0, n))
        for t in range(rounds):
            for i in range(n):
                if t % (i + 1) == 0:
                    wait_answered(free, i)
                    if done[i]:
                        check(i)
                    free.send(i, int(actions[done[i], i]))
                    done[i] += 1
        for i in range(n):
            wait_answered(free, i)
            check(i)
        assert done == [120, 60, 40]
        with pytest.raises(RuntimeError, match=r"free_run\(\) is open"):
            vec.step(after[0])
        top = max(done[i] for i in free.workers)
        assert free.close() == sum(top - done[i] for i in free.workers)  # catch-up steps
    assert ends >= 1  # an episode ended (and was reset) on the way
    with pytest.raises(RuntimeError, match="FreeRun is closed"):
        free.send(0, 0)

    # Lock step again, each worker env having had `top` steps (the last ones action 0).
    for i in range(n):
        played = list(actions[:done[i], i])
        if i in free.workers:
            played += [0] * (top - done[i])
        serial[i] = serial_trajectory(config, seed + i, [*played, *after[:, i]])[1][len(played):]
    for t in range(len(after)):
        out = vec.step(after[t])
        for i in range(n):
            np.testing.assert_array_equal(vec.obs[i], serial[i][t][1], err_msg=f"{t}, {i}")
            assert out.raw_reward[i] == np.float32(serial[i][t][0].raw_reward)


@FREE
def test_a_free_run_refuses_bad_calls_and_leaves_the_pool_usable(make_vec, monkeypatch):
    import agent.wire

    vec = make_vec(num_envs=2)
    with pytest.raises(RuntimeError, match=r"call reset\(\) before free_run\(\)"):
        vec.free_run()
    vec.reset()
    with vec.free_run() as free:
        for call in (vec.reset, vec.get_states, vec.free_run, lambda: vec.step([0, 0]),
                     lambda: vec.step_async([0, 0]), vec.step_wait):
            with pytest.raises(RuntimeError, match=r"while a free_run\(\) is open"):
                call()
        with pytest.raises(ValueError, match=r"env index must be an int in \[0, 1\], got 2"):
            free.send(2, 0)
        with pytest.raises(ValueError, match=r"env index must be an int in \[0, 1\], got -1"):
            free.answered(-1)
        k = len(vec.actions)
        with pytest.raises(ValueError, match=rf"action must be an int in \[0, {k - 1}\].*got {k}"):
            free.send(1, k)
        os.kill(vec.pids[0], signal.SIGSTOP)  # it cannot answer until SIGCONT
        try:
            free.send(1, 1)
            with pytest.raises(RuntimeError, match=r"env 1 has not answered its last step"):
                free.send(1, 1)
            assert not free.answered(1)
        finally:
            os.kill(vec.pids[0], signal.SIGCONT)
        with pytest.raises(ValueError, match=r"action must be an int"):
            free.close(catch_up_action=-1)
    assert not vec.closed
    assert vec.step([1, 1]).reward.shape == (2,)

    monkeypatch.setattr(agent.wire, "DOORBELL", False)
    pipes = make_vec(num_envs=2)
    pipes.reset()
    with pytest.raises(RuntimeError, match="doorbell words.*waits on its pipes"):
        pipes.free_run()
    assert pipes.step([1, 1]).reward.shape == (2,)


@FREE
def test_a_worker_killed_in_a_free_run_is_named_and_leaves_no_orphans(make_vec):
    vec = make_vec(num_envs=2, inline_first=False)
    vec.reset()
    victim = vec.env_pids[1]
    with pytest.raises(WorkerError, match=r"worker 1 \(pid \d+\) (died|closed its pipe)"):
        with vec.free_run() as free:
            free.send(0, 1)
            os.kill(victim, signal.SIGKILL)
            assert wait_gone([victim]) == []
            free.send(1, 1)  # (raises here if the worker slept: its pipe is closed)
            free.close()  # waits for the answer that never comes
    assert vec.closed and wait_gone(vec.pids) == []


def test_the_pids_are_the_worker_processes_only(make_vec):
    inline = make_vec(num_envs=3)
    assert inline.inline_first and len(inline.pids) == 2 == len(our_children(inline))
    assert inline.env_pids == [None, *inline.pids]
    workers = make_vec(num_envs=3, inline_first=False)
    assert len(workers.pids) == 3 == len(our_children(workers))
    assert workers.env_pids == workers.pids
    alone = make_vec(num_envs=1)  # env 0 in this process: no worker at all
    assert alone.pids == [] and alone.env_pids == [None]
    alone.reset()
    assert alone.step([1]).reward.shape == (1,)


def test_env_0_in_process_steps_only_in_step_wait(make_vec):
    vec = make_vec(seed=2)
    vec.reset()
    before = vec.obs[0].copy()
    vec.step_async([3, 3])
    np.testing.assert_array_equal(vec.obs[0], before)  # env 0 has not moved yet
    vec.step_wait()
    np.testing.assert_array_equal(vec.obs[0, :-1], before[1:])


@INLINE
@pytest.mark.parametrize("doorbell", [True, False], ids=["doorbell", "pipe-only"])
def test_a_killed_worker_is_named_and_leaves_no_orphans(make_vec, monkeypatch, inline_first,
                                                        doorbell):
    import agent.wire

    monkeypatch.setattr(agent.wire, "DOORBELL", doorbell)
    vec = make_vec(timeout=5, inline_first=inline_first)
    vec.reset()
    vec.step([0, 0])
    victim = vec.env_pids[1]
    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        vec.step([0, 0])
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert f"worker 1 (pid {victim})" in message and "SIGKILL" in message, message
    assert info.value.index == 1 and info.value.pid == victim and info.value.exitcode == -9
    assert vec.closed and our_children(vec) == []
    assert wait_gone(vec.pids) == []
    with pytest.raises(RuntimeError, match="closed"):
        vec.step([0, 0])


@INLINE
def test_a_hung_worker_times_out_and_is_cleaned_up(make_vec, inline_first):
    vec = make_vec(timeout=2, inline_first=inline_first)
    vec.reset()
    victim = vec.pids[0]  # env 1's worker with env 0 in this process, else env 0's
    index = vec.env_pids.index(victim)
    assert index == (1 if inline_first else 0)
    error = stop_and_step(vec, victim, "did not answer within 2 s", 1.9, 4.5)
    assert f"worker {index} (pid {victim})" in str(error)
    assert error.index == index and error.pid == victim
    assert vec.closed and our_children(vec) == []
    assert wait_gone(vec.pids) == []


@INLINE
def test_an_exception_in_a_worker_comes_back_with_its_message(make_vec, inline_first):
    vec = make_vec(inline_first=inline_first)
    vec.reset()
    with pytest.raises(WorkerValueError, match=r"worker 1 .*action must be an int in \[0, 11\]"):
        vec._step(np.array([0, 99]))  # past the parent's check: the env itself refuses it
    assert vec.closed and wait_gone(vec.pids) == []
    assert issubclass(WorkerValueError, ValueError) and issubclass(WorkerValueError, WorkerError)


def test_an_exception_in_env_0_in_process_is_a_worker_error_and_closes_the_pool(make_vec):
    vec = make_vec()
    vec.reset()
    pids = list(vec.pids)
    with pytest.raises(WorkerValueError, match=r"env 0 \(in this process\) raised ValueError "
                                               r"during step: action must be an int") as info:
        vec._step(np.array([99, 0]))  # the same error type as a worker's ValueError
    assert info.value.index == 0 and info.value.pid is None
    assert isinstance(info.value.__cause__, ValueError)  # the env's own, with its traceback
    assert vec.closed and our_children(vec) == [] and wait_gone(pids) == []
    with pytest.raises(RuntimeError, match=r"closed \(env 0 \(in this process\) failed\)"):
        vec.step([0, 0])

    other = make_vec(num_envs=3)
    other.reset()

    def broken_step(action, out=None):
        raise RuntimeError("emulator exploded (test)")

    other._inline.env.step = broken_step
    with pytest.raises(WorkerError, match=r"env 0 \(in this process\) raised RuntimeError "
                                          r"during step: emulator exploded") as info:
        other.step([0, 0, 0])
    assert not isinstance(info.value, ValueError) and info.value.pid is None
    assert other.closed and wait_gone(other.pids) == []


def _fail_to_start(monkeypatch, failing_seed: int) -> None:
    """Patch AtariEnv so that the env of `failing_seed` fails to load its ROM ("fork" workers
    inherit the patch)."""
    import agent.env

    real_init = agent.env.AtariEnv.__init__

    def flaky_init(self, config=None, seed=0):
        if seed == failing_seed:
            raise RuntimeError("ROM load failed (test)")
        real_init(self, config, seed)

    monkeypatch.setattr(agent.env.AtariEnv, "__init__", flaky_init)


def test_a_worker_that_fails_to_start_is_named_and_the_rest_are_stopped(monkeypatch):
    """With "fork" the workers inherit a patched AtariEnv whose ROM load fails in worker 1."""
    _fail_to_start(monkeypatch, 1)
    before = {p.pid for p in multiprocessing.active_children()}
    for inline_first in (True, False):
        with pytest.raises(WorkerError, match=r"worker 1 \(pid \d+\) raised an exception "
                                              r"during start:(.|\n)*ROM load failed \(test\)"):
            VecEnv(EnvConfig(), 3, start_method="fork", inline_first=inline_first)
        assert {p.pid for p in multiprocessing.active_children()} <= before


def test_env_0_failing_to_start_in_process_stops_the_workers(monkeypatch):
    _fail_to_start(monkeypatch, 0)
    before = {p.pid for p in multiprocessing.active_children()}
    with pytest.raises(WorkerError, match=r"env 0 \(in this process\) raised RuntimeError "
                                          r"during start: ROM load failed \(test\)"):
        VecEnv(EnvConfig(), 3, start_method="fork")
    assert {p.pid for p in multiprocessing.active_children()} <= before


@pytest.mark.parametrize("actions, match", [
    ([0], r"shape \(2,\)"),
    ([[0, 1]], r"shape \(2,\)"),
    ([0, 12], r"actions\[1\] = 12 is out of range.*\[0, 11\]"),
    ([-1, 0], r"actions\[0\] = -1 is out of range"),
    ([0.5, 1], r"ints in \[0, 11\], got dtype float64"),
    ([True, False], r"got dtype bool"),
    (["a", "b"], r"got dtype <U1"),
])
def test_bad_actions_are_refused_and_the_pool_stays_usable(make_vec, actions, match):
    vec = make_vec()
    vec.reset()
    with pytest.raises(ValueError, match=match):
        vec.step(actions)
    assert not vec.closed
    out = vec.step(np.array([3, 4], dtype=np.uint8))
    assert out.reward.shape == (2,)


def test_construction_is_checked():
    with pytest.raises(ValueError, match="num_envs"):
        VecEnv(EnvConfig(), 0)
    with pytest.raises(ValueError, match="seed"):
        VecEnv(EnvConfig(), 1, seed=-1)
    with pytest.raises(ValueError, match="timeout"):
        VecEnv(EnvConfig(), 1, timeout=0)
    with pytest.raises(ValueError, match="spin"):
        VecEnv(EnvConfig(), 1, spin=-1)
    with pytest.raises(ValueError, match="start_method"):
        VecEnv(EnvConfig(), 1, start_method="thread")
    with pytest.raises(ValueError, match="inline_first"):
        VecEnv(EnvConfig(), 1, inline_first=1)
    with pytest.raises(ValueError, match="unknown game"):
        VecEnv(EnvConfig(game="no_such_game"), 1)


def test_step_before_reset_is_refused(make_vec):
    vec = make_vec(num_envs=1)
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        vec.step([0])


@INLINE
def test_close_is_idempotent_and_leaves_no_children(make_vec, inline_first):
    vec = make_vec(num_envs=3, inline_first=inline_first)
    vec.reset()
    pids = list(vec.pids)
    assert len(our_children(vec)) == (2 if inline_first else 3)
    vec.close()
    vec.close()
    assert our_children(vec) == [] and wait_gone(pids) == []
    with pytest.raises(RuntimeError, match="closed"):
        vec.reset()
    assert vec.obs.shape == (3, 4, 84, 84)  # the views outlive the workers


def test_context_manager_and_garbage_collection_close_the_pool():
    with VecEnv(EnvConfig(), 2) as vec:
        vec.reset()
        pids = list(vec.pids)
    assert vec.closed and len(pids) == 1 and wait_gone(pids) == []
    vec = VecEnv(EnvConfig(), 2)
    pids = list(vec.pids)
    del vec  # the finalizer holds no reference to the VecEnv
    assert wait_gone(pids) == []


def test_workers_ignore_ctrl_c(make_vec):
    vec = make_vec()
    vec.reset()
    os.kill(vec.pids[0], signal.SIGINT)
    time.sleep(0.2)
    vec.step([0, 0])
    assert all(proc_running(p) for p in vec.pids)


@pytest.mark.parametrize("method", ["forkserver", "fork"])
def test_workers_exit_when_the_parent_process_dies(method):
    code = textwrap.dedent(f"""
        import sys, time
        from agent.config import EnvConfig
        from agent.workers import VecEnv
        if __name__ == "__main__":
            vec = VecEnv(EnvConfig(), 3, start_method={method!r})
            vec.reset()
            print(*vec.pids, flush=True)
            time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        line = parent.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2, line
        assert all(proc_running(p) for p in pids)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert wait_gone(pids, 10) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        parent.stdout.close()


def test_ctrl_c_to_the_process_group_reaches_only_the_parent():
    """A terminal's Ctrl-C signals the whole group: workers ignore it, the parent closes."""
    code = textwrap.dedent("""
        import sys
        from agent.config import EnvConfig
        from agent.workers import VecEnv
        if __name__ == "__main__":
            vec = VecEnv(EnvConfig(), 3)  # env 0 in this process: Ctrl-C may land in it
            vec.reset()
            print(*vec.pids, flush=True)
            try:
                while True:
                    vec.step([0, 1, 2])
            except KeyboardInterrupt:
                print("interrupted", flush=True)
            finally:
                vec.close()
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(0.3)
        os.killpg(parent.pid, signal.SIGINT)  # the group of the session started just above
        out, err = parent.communicate(timeout=20)
        assert "interrupted" in out and parent.returncode == 0, err[-2000:]
        assert "Traceback" not in err, err[-2000:]  # no worker was interrupted
        assert wait_gone(pids) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.communicate(timeout=10)
