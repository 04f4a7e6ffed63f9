"""Smoke test of the Ray benchmark: one machine and one Ray actor gather steps, the table prints,
the JSON adds up; bad arguments are refused in one line."""

import subprocess
import sys

import pytest

from tests.benchrun import ROOT, run_bench, with_root_on_path

pytest.importorskip("ray")


def test_bench_ray_quick_writes_the_documented_json(tmp_path):
    proc, res = run_bench("bench_ray.py", tmp_path / "ray.json", "--actors", "1",
                          timeout=600, env=with_root_on_path())
    assert "| actors | envs | one machine | Ray | Ray / one |" in proc.stdout
    assert "target: Ray >= 0.8x one machine at equal envs" in proc.stdout
    assert res["steps"] == 300 and res["warmup"] == 100
    (case,) = res["cases"]
    assert case["actors"] == 1 and case["total_envs"] == 1
    for side in ("one_machine", "ray"):
        assert case[side]["steps"] >= 300 and case[side]["sps"] > 0
    assert case["ratio"] == pytest.approx(case["ray"]["sps"] / case["one_machine"]["sps"])
    assert len(case["ray"]["actor_sps"]) == 1 and case["ray"]["ingest_us_per_step"] > 0


@pytest.mark.parametrize("args, said", [(["--actors", "0"], "--actors and --envs must be >= 1"),
                                        (["--actors", "x"], "--actors: expected"),
                                        (["--steps", "10"], "--warmup (500) must be below")])
def test_bench_ray_refuses_bad_arguments(args, said):
    proc = subprocess.run([sys.executable, "scripts/bench_ray.py", *args], cwd=ROOT,
                          capture_output=True, text=True, env=with_root_on_path(), timeout=60)
    assert proc.returncode == 2 and said in proc.stderr, proc.stderr
