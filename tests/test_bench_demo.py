"""scripts/bench_demo.py: README's first command read from README.md, the verdict per run, and
(marked slow: tests/test_demo.py runs the same demo in-process) its quick run end to end."""

from __future__ import annotations

import pytest

from tests.benchrun import load_script, run_bench


def _bench():
    return load_script("bench_demo")


def test_it_runs_readme_first_command_in_two_timed_parts():
    install, demo = _bench().readme_command()
    assert install.startswith("pip install") and " -e ." in install
    assert demo == "atari-agent demo"


def test_a_run_meets_the_target_only_beyond_3_standard_errors_and_within_10_minutes():
    bench = _bench()
    d = {"train_s": 100.0, "game": "road_runner", "action_set": "documented", "steps": 20_000,
         "episodes": 30, "agent": {"mean": 900.0, "std": 50.0},
         "random": {"mean": 5.0, "std": 20.0}, "difference": 895.0, "se_difference": 10.0,
         "z": 89.5, "verdict": "..."}
    assert bench._row(1, d, 300.0, 120.0, "abc")["met"]
    assert not bench._row(1, d, 601.0, 120.0, "abc")["met"]  # over 10 minutes
    assert not bench._row(1, {**d, "z": 2.9}, 300.0, 120.0, "abc")["met"]
    text = bench.render([bench._row(1, d, 300.0, None, None)])
    assert "| 1 | - | 5.0 | road_runner (documented) | 20,000 | 900.0 ± 50.0 |" in text
    assert "met in 1 of 1 runs" in text


@pytest.mark.slow
def test_bench_demo_quick_runs_the_demo_and_reports_it(tmp_path):
    proc, result = run_bench("bench_demo.py", tmp_path / "demo.json", timeout=600)
    (row,) = result["runs"]
    assert row["steps"] == 2_000 and row["episodes"] == 2 and row["demo_s"] > 0
    assert row["met"] == (row["z"] >= 3 and row["demo_s"] <= 600)
    assert "| run | install min | demo min |" in proc.stdout
