"""Smoke test of the training benchmark: both sides train, the table prints, the JSON adds up."""

import math

import pytest
import torch

from agent.learner import use_bf16
from tests.benchrun import run_bench, with_root_on_path

POSITIVE = ("learning_sps", "overall_sps", "warmup_sps", "updates_per_s", "pure_updates_per_s",
            "learning_s", "total_s", "setup_s", "updates", "episodes")


@pytest.mark.slow
def test_bench_train_quick_writes_the_documented_json(tmp_path):
    """--quick itself (3,000 steps a side): about 9 minutes on an AVX2-only 2-core machine."""
    check_bench_train(tmp_path, 3_000, 1_000)


def test_bench_train_short_writes_the_documented_json(tmp_path):
    """The default run's twin: the same sides and checks, 800 steps a side (100 updates) and
    5 timed pure updates (about 80 s here; 1,200 steps took 220 s)."""
    check_bench_train(tmp_path, 800, 400, "--steps", "800", "--learning-starts", "400",
                      "--pure-updates", "5", "--vector-envs", "2", "--vector-seconds", "1")


def check_bench_train(tmp_path, steps: int, starts: int, *args: str) -> None:
    # One torch thread a side: on a shared 2-core machine, torch's default two threads run many
    # times slower whenever other load holds a core; this test checks the plumbing, not speed.
    proc, result = run_bench("bench_train.py", tmp_path / "bench.json", "--threads", "1", *args,
                             timeout=1500, env=with_root_on_path())
    learning = steps - starts
    assert "| Side | envs | learning-phase SPS | overall SPS | updates/s (in training) |" \
        in proc.stdout
    assert "| ours | 2 |" in proc.stdout and "| sb3 | 2 |" in proc.stdout
    assert "target: ours >= 2x SB3's SPS, 1 env each" in proc.stdout
    assert "target: ours with 2 envs >= 1.3x ours with 1" in proc.stdout

    s = result["settings"]
    assert (s["steps"], s["learning_starts"]) == (steps, starts)
    assert (s["replay_capacity"], s["batch_size"], s["train_freq"]) == (100_000, 32, 4)
    assert s["target_update_steps"] == 10_000 and s["target_update_updates_ours"] == 2_500
    assert s["eps_decay_steps"] == steps // 10 and s["torch_threads"] == 1
    assert s["envs"] == s["sb3_envs"] == [1, 2]
    # SB3's epsilon reaches 0.05 at a tenth of the steps, before learning starts: so does ours
    # (ours decays from learning_starts on, over what is left of SB3's line: nothing).
    assert s["ours_explore"] == {"eps_start": 0.05, "eps_end": 0.05, "eps_decay_steps": 0}

    sides = result["sides"]
    assert set(sides) == {"ours_envs1", "ours_envs2", "sb3_envs1", "sb3_envs2"}
    for key, side in sides.items():
        assert "error" not in side, side
        for k in POSITIVE:
            assert isinstance(side[k], (int, float)) and side[k] > 0, (key, k)
        assert side["steps"] == steps and side["learning_steps"] == learning
        # One update per 4 agent steps, counted over all envs, whatever their number.
        assert abs(side["updates"] - learning / 4) <= 10, (key, side["updates"])
        assert side["n_actions"] == 4  # Breakout's minimal action set
        assert side["torch_threads"] == 1
        assert side["score"] >= 0 and len(side["scores_last"]) == min(side["episodes"], 20)
        assert math.isclose(side["score"], sum(side["scores_last"]) / len(side["scores_last"]))
        assert side["learning_sps"] == pytest.approx(learning / side["learning_s"])
    for n in (1, 2):
        ours, sb3 = sides[f"ours_envs{n}"], sides[f"sb3_envs{n}"]
        assert ours["envs"] == sb3["envs"] == n
        # ours: precision "auto", bf16 only on a CPU that runs it natively
        auto = "bf16 autocast" if use_bf16("auto", torch.device("cpu")) else "fp32"
        assert ours["precision"] == auto and sb3["precision"].startswith("fp32")
        assert ours["state"] == "finished"
        # SB3's Monitor records whole games: each one is several lost lives (learning terminals).
        assert sb3["learn_terminals"] >= 4 * sb3["episodes"]
        assert sb3["adam_eps"] == s["adam_eps"]
        assert result["sps_vs_sb3"][str(n)] == pytest.approx(
            ours["learning_sps"] / sb3["learning_sps"])
    assert (sides["sb3_envs2"]["sb3_train_freq"], sides["sb3_envs2"]["sb3_gradient_steps"]) \
        == (2, 1)
    assert sides["sb3_envs2"]["vec_env"] == "SubprocVecEnv"

    ours, sb3 = sides["ours_envs2"], sides["sb3_envs2"]  # the headline: the largest N
    assert result["envs"] == 2 and result["sps"] == ours["learning_sps"]
    assert result["sps_ratio_vs_sb3"] == pytest.approx(ours["learning_sps"] / sb3["learning_sps"])
    assert result["overall_sps_ratio_vs_sb3"] == pytest.approx(
        ours["overall_sps"] / sb3["overall_sps"])
    assert result["pure_updates_ratio_vs_sb3"] == pytest.approx(
        ours["pure_updates_per_s"] / sb3["pure_updates_per_s"])
    assert result["updates_per_s"] == ours["updates_per_s"] > 0
    assert result["updates_per_s_sb3"] == sb3["updates_per_s"] > 0
    assert (result["score"], result["score_sb3"]) == (ours["score"], sb3["score"])
    assert result["sps_envs2_vs_envs1"] == pytest.approx(
        ours["learning_sps"] / sides["ours_envs1"]["learning_sps"])
    met = {t["target"]: t["met"] for t in result["targets"]}
    assert met["ours with 2 envs >= 1.3x ours with 1 (learning phase)"] == (
        result["sps_envs2_vs_envs1"] >= 1.3)
    if "--vector-envs" not in args:
        assert result["vector_env"] == {} and result["sps_vs_vector_env"] is None
        return
    # ale-py's AtariVectorEnv stepped in the same run: the ceiling the learning run is held to.
    vector = result["vector_env"]["vector_envs2"]
    assert vector["envs"] == 2 and vector["n_actions"] == 4 and vector["seconds"] >= 1.0
    assert vector["sps"] > 0
    assert vector["sps"] == pytest.approx(vector["agent_steps"] / vector["seconds"])
    assert result["vector_env_envs"] == 2 and result["vector_env_sps"] == vector["sps"]
    assert result["sps_vs_vector_env"] == pytest.approx(ours["learning_sps"] / vector["sps"])
    assert "ale_py AtariVectorEnv, 2 envs (no learning: the emulation ceiling)" in proc.stdout
    key = ("ours with 2 envs >= 0.5x AtariVectorEnv with 2 envs (ours learning, it only "
           "stepping)")
    assert met[key] == (result["sps_vs_vector_env"] >= 0.5)
