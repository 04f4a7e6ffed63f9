"""Smoke test of scripts/bench_learner.py: it runs, prints its table and writes its JSON."""


from tests.benchrun import run_bench


def test_bench_learner_quick_writes_the_documented_json(tmp_path):
    proc, result = run_bench("bench_learner.py", tmp_path / "learner.json", "--threads", "1")
    assert "| bf16 autocast + channels_last |" in proc.stdout
    assert result["threads"] == 1
    ms = result["ms_per_update"]
    assert ms["fp32"] > 0 and ms["bf16"] > 0
    assert abs(result["bf16_speedup"] - ms["fp32"] / ms["bf16"]) < 1e-9
    assert "| bf16 autocast + channels_last, channels_last batches |" in proc.stdout
    assert ms["bf16_nhwc"] > 0 and len(result["ms_repeats"]["bf16_nhwc"]) == 1
    assert abs(result["nhwc_batch_speedup"] - ms["bf16"] / ms["bf16_nhwc"]) < 1e-9
