"""Smoke test of the training benchmark: both sides train, the table prints, the JSON adds up."""

import math

import pytest

from tests.benchrun import run_bench, with_root_on_path

POSITIVE = ("learning_sps", "overall_sps", "warmup_sps", "updates_per_s", "pure_updates_per_s",
            "learning_s", "total_s", "setup_s", "updates", "episodes")


def test_bench_train_quick_writes_the_documented_json(tmp_path):
    # One torch thread a side: on a shared 2-core machine, torch's default two threads run many
    # times slower whenever other load holds a core; this test checks the plumbing, not speed.
    proc, result = run_bench("bench_train.py", tmp_path / "bench.json", "--threads", "1",
                             timeout=900, env=with_root_on_path())
    assert "| Side | learning-phase SPS | overall SPS | updates/s (in training) |" in proc.stdout
    assert "| ours |" in proc.stdout and "| sb3 |" in proc.stdout
    assert "target: >= 2x SB3's SPS" in proc.stdout

    s = result["settings"]
    assert (s["steps"], s["learning_starts"]) == (3_000, 1_000)
    assert (s["replay_capacity"], s["batch_size"], s["train_freq"]) == (100_000, 32, 4)
    assert s["target_update_steps"] == 10_000 and s["target_update_updates_ours"] == 2_500
    assert s["eps_decay_steps"] == 300 and s["torch_threads"] == 1
    # SB3's epsilon reaches 0.05 at step 300, before learning starts: so does ours (ours decays
    # from learning_starts on, over what is left of SB3's line: nothing).
    assert s["ours_explore"] == {"eps_start": 0.05, "eps_end": 0.05, "eps_decay_steps": 0}

    ours, sb3 = result["sides"]["ours"], result["sides"]["sb3"]
    for side in (ours, sb3):
        assert "error" not in side, side
        for key in POSITIVE:
            assert isinstance(side[key], (int, float)) and side[key] > 0, (side["side"], key)
        assert side["steps"] == 3_000 and side["learning_steps"] == 2_000
        assert 490 <= side["updates"] <= 510  # one update per 4 of the 2,000 learning steps
        assert side["n_actions"] == 4  # Breakout's minimal action set
        assert side["torch_threads"] == 1
        assert side["score"] >= 0 and len(side["scores_last"]) == min(side["episodes"], 20)
        assert math.isclose(side["score"], sum(side["scores_last"]) / len(side["scores_last"]))
        assert side["learning_sps"] == pytest.approx(2_000 / side["learning_s"])
    assert ours["precision"] == "bf16 autocast" and sb3["precision"].startswith("fp32")
    assert ours["state"] == "finished"
    # SB3's Monitor records whole games: each one is several lost lives (learning terminals).
    assert sb3["learn_terminals"] >= 4 * sb3["episodes"]
    assert sb3["adam_eps"] == s["adam_eps"]

    assert result["sps_ratio_vs_sb3"] == pytest.approx(ours["learning_sps"] / sb3["learning_sps"])
    assert result["overall_sps_ratio_vs_sb3"] == pytest.approx(
        ours["overall_sps"] / sb3["overall_sps"])
    assert result["pure_updates_ratio_vs_sb3"] == pytest.approx(
        ours["pure_updates_per_s"] / sb3["pure_updates_per_s"])
    assert result["updates_per_s"] == ours["updates_per_s"] > 0
    assert result["updates_per_s_sb3"] == sb3["updates_per_s"] > 0
    assert (result["score"], result["score_sb3"]) == (ours["score"], sb3["score"])
    assert (result["episodes"], result["episodes_sb3"]) == (ours["episodes"], sb3["episodes"])
    assert result["target"]["met"] == (result["sps_ratio_vs_sb3"] >= 2.0)
