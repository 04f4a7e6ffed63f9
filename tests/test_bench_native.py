"""Smoke test of the benchmark entry point: it runs, prints its tables and writes its JSON."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_bench_native_quick_writes_the_documented_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "scripts/bench_native.py", "--quick", "--skip-sb3", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| native uniform |" in proc.stdout and "vs OpenCV" in proc.stdout
    result = json.loads(out.read_text())
    assert result["preprocess_speedup_vs_opencv"] > 0
    assert result["sample_time_vs_memcpy"] > 0
    assert result["sample_speedup_vs_sb3"] is None  # --skip-sb3
    assert 7_000 < result["bytes_per_transition"] <= 7_100
