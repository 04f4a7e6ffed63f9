"""Ape-X actors without Ray: an actor's chunks put into the replay exactly what the one-machine
collector records for the same steps; the epsilon ladder; --ray's settings and a missing Ray."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from agent.actors import ADD, RESET, ActorCore, ingest
from agent.collector import Collector
from agent.config import Config, RayConfig, to_dict
from agent.native import FrameReplay
from agent.train import default_env


def _replay(config: Config, streams: int = 1) -> FrameReplay:
    c = config
    return FrameReplay(c.replay.capacity, c.env.frame_shape, c.env.stack, c.learner.n_step,
                       c.learner.gamma, c.replay.prioritized, c.replay.alpha, seed=1,
                       streams=streams)


def test_a_chunk_fills_the_replay_as_the_collector_records_the_same_steps():
    """Breakout with lost lives as learning terminals and game overs: the actor's chunks,
    ingested, leave the replay bit for bit as the collector leaves it playing the same actions
    in the same emulator."""
    config = Config().replace(env={"game": "breakout", "terminal_on_life_loss": True,
                                   "max_frames": 1_600},  # (truncations too)
                              replay={"capacity": 3_000}, learner={"n_step": 3},
                              run={"envs": 1})
    make = lambda seed, env_config: default_env(7, env_config)  # noqa: E731 - same emulator
    actor = ActorCore(to_dict(config), 0, epsilon=1.0, make_env=make)
    actor.start(seed=11)
    ours = _replay(config)
    chunks = [actor.collect(300) for _ in range(2)]  # every action random (no weights yet)
    for chunk in chunks:
        assert ingest(ours, chunk, 0) == 300
    actor.close()
    ops = np.concatenate([c["op"] for c in chunks])
    actions = np.concatenate([c["action"] for c in chunks])[ops == ADD]
    assert (ops == RESET).sum() > 3  # lost lives, and a game over or a truncation
    assert sum(len(c["scores"]) for c in chunks) >= 1  # an episode ended (over or truncated)

    collector = Collector(config, 1, make, env_seed=0, replay_seed=1,
                          explore_seed=np.random.SeedSequence(2))
    script = iter(actions.tolist())
    try:
        collector.start()
        for _ in range(len(actions)):
            collector.step(lambda obs: next(script), epsilon=0.0)
        theirs = collector.replay.state_dict()
    finally:
        collector.close()
    mine = ours.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert np.array_equal(mine[key], theirs[key]), key
    scores = [s for c in chunks for _, s, _ in c["scores"]]
    assert scores == list(collector.scores)


def test_each_env_of_an_actor_is_its_own_stream_and_acting_uses_the_sent_weights():
    from tests.toygame import make_fire_game

    config = Config().replace(env={"frame_shape": [36, 36], "stack": 2},
                              replay={"capacity": 400}, learner={"n_step": 1},
                              run={"envs": 2})
    actor = ActorCore(to_dict(config), 3, epsilon=0.0, make_env=make_fire_game)
    actor.start(seed=1)
    assert actor.version == -1
    # a network whose FIRE output is larger everywhere: acting greedily must press FIRE
    state = {k: v.numpy().copy() for k, v in actor.network.state_dict().items()}
    last = [k for k in state if k.endswith("bias")][-1]
    state[last][:] = [0.0, 0.0, 100.0, 0.0]
    chunk = actor.collect(10, weights={"version": 42, "state": state})
    assert chunk["actor"] == 3 and chunk["version"] == 42 and chunk["steps"] == 20
    assert set(chunk["action"][chunk["op"] == ADD].tolist()) == {2}
    replay = _replay(config, streams=4)
    ingest(replay, chunk, first_stream=2)  # actor 1's streams when each actor has 2 envs
    totals = replay.stream_totals
    assert list(totals) == [0, 0, 11, 11]  # a first frame and 10 steps each
    actor.close()


def test_a_nan_reward_is_refused_naming_the_actor_and_env():
    config = Config().replace(env={"frame_shape": [36, 36], "stack": 2},
                              replay={"capacity": 400}, run={"envs": 1})
    from tests.toygame import make_fire_game

    actor = ActorCore(to_dict(config), 1, epsilon=1.0, make_env=make_fire_game)
    actor.start(seed=0)
    chunk = actor.collect(5)
    chunk["reward"][3] = np.nan
    with pytest.raises(ValueError, match=r"actor 1 env 0: .*cannot be learned from"):
        ingest(_replay(config), chunk, 0)


def test_the_ape_x_epsilon_ladder():
    eps = RayConfig(actors=8).epsilons()
    assert eps[0] == pytest.approx(0.4) and eps[-1] == pytest.approx(0.4 ** 8)
    assert all(a > b for a, b in zip(eps, eps[1:], strict=False))
    assert RayConfig(actors=1).epsilons() == [0.4]


@pytest.mark.parametrize("bad", ["nowhere", "ray://", "host:port", "1.2.3.4"])
def test_a_bad_ray_address_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match=rf"ray.address must be .*got {bad!r}"):
        Config().replace(ray={"address": bad})
    for good in ("local", "auto", "10.0.0.1:6379", "ray://head.example:10001"):
        assert Config().replace(ray={"address": good}).ray.enabled


def test_actors_zero_is_refused():
    with pytest.raises(ValueError, match="ray.actors must be"):
        Config().replace(ray={"actors": 0})


def test_without_ray_installed_the_run_says_how_to_install_it(monkeypatch):
    from agent.distributed import RayUnavailable, import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(RayUnavailable, match=r'pip install -e "\.\[ray\]"'):
        import_ray()


@pytest.mark.parametrize("args, said", [
    (["--ray", "nowhere"], "ray.address must be 'local', 'auto', HOST:PORT or ray://HOST:PORT"),
    (["--ray", "--actors", "0"], "ray.actors must be"),
    (["--ray", "127.0.0.1:1"], "cannot reach the Ray cluster at '127.0.0.1:1'"),
])
def test_train_refuses_bad_ray_settings_in_one_line(tmp_path, capsys, args, said):
    from agent.cli import main

    assert main(["train", "--runs-dir", str(tmp_path), "--name", "r", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0], err
    assert not (tmp_path / "r").exists()


def test_train_with_ray_missing_says_how_to_install_it_and_writes_nothing(tmp_path, capsys,
                                                                          monkeypatch):
    from agent.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["train", "--runs-dir", str(tmp_path), "--name", "r", "--ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['atari-agent train: --ray needs Ray, which is not installed here: '
                   'pip install -e ".[ray]" (or pip install "ray>=2.60,<3")'], err
    assert not (tmp_path / "r").exists()
