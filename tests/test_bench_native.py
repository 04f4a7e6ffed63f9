"""Smoke test of the benchmark entry point: it runs, prints its tables and writes its JSON."""


from tests.benchrun import run_bench


def test_bench_native_quick_writes_the_documented_json(tmp_path):
    proc, result = run_bench("bench_native.py", tmp_path / "bench.json", "--skip-sb3")
    assert "| native uniform |" in proc.stdout and "vs OpenCV" in proc.stdout
    assert result["preprocess_speedup_vs_opencv"] > 0
    assert result["sample_time_vs_memcpy"] > 0
    assert result["sample_speedup_vs_sb3"] is None  # --skip-sb3
    assert 7_000 < result["bytes_per_transition"] <= 7_100
    # the draw of ring rows only (learner.device_frames), beside the draw with frames
    rows = [k for k in result["sample"] if k.startswith("native_uniform_16streams_rows@")]
    assert len(rows) == 1 and result["sample"][rows[0]]["rows"] is True
    assert result["sample"][rows[0]]["us"] > 0
    assert "| native uniform, 16 streams, ring rows only (`rows=`) |" in proc.stdout
