"""Smoke test of scripts/bench_learner.py: it runs, prints its tables and writes its JSON."""


from tests.benchrun import run_bench


def test_bench_learner_quick_writes_the_documented_json(tmp_path):
    proc, result = run_bench("bench_learner.py", tmp_path / "learner.json", "--threads", "1",
                             "--device", "cpu", "--device-frames")
    assert "| bf16 autocast + channels_last weights, NCHW batches |" in proc.stdout
    assert "| fp32, NCHW weights and batches |" in proc.stdout
    assert result["threads"] == 1
    ms = result["ms_per_update"]
    assert set(ms) == {"fp32_nchw", "fp32", "bf16", "bf16_nhwc"} and min(ms.values()) > 0
    assert abs(result["bf16_speedup"] - ms["fp32"] / ms["bf16_nhwc"]) < 1e-9
    assert abs(result["channels_last_speedup_fp32"] - ms["fp32_nchw"] / ms["fp32"]) < 1e-9
    assert "| bf16 autocast + channels_last weights and batches |" in proc.stdout
    assert len(result["ms_repeats"]["bf16_nhwc"]) == 1
    assert abs(result["nhwc_batch_speedup"] - ms["bf16"] / ms["bf16_nhwc"]) < 1e-9
    assert result["auto_precision"] in ("fp32", "bf16")
    # the update paths and acting: on CPU the eager path is the default, and with
    # --device-frames the same path gathering its batches from the copy of the frames
    assert result["device"] == "cpu" and result["default_path"] == "eager"
    assert set(result["paths"]) == {"eager", "eager_frames"}
    assert min(result["paths"]["eager_frames"].values()) > 0
    assert "| eager_frames |" in proc.stdout
    for key in ("update_ms_b32", "update_ms_b256", "act_ms_b1", "act_ms_b64", "act_ms_single",
                "sync_target_ms"):
        assert result[key] > 0, key
    assert result["update_ms_b32"] == result["paths"]["eager"]["update_ms_b32"]
    assert "| eager (default) |" in proc.stdout and "| act_batch, 64 stacks |" in proc.stdout
