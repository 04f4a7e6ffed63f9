"""Smoke test of the env benchmark: it runs, prints its tables and writes its JSON."""

import importlib.util

from tests.benchrun import run_bench

ALWAYS = ("raw_ale", "raw_ale_2proc", "single", "gymnasium", "atarivectorenv_1", "atarivectorenv_2")


def test_bench_env_quick_writes_the_documented_json(tmp_path):
    proc, result = run_bench("bench_env.py", tmp_path / "bench.json")
    assert "| Environment | envs | actions | agent steps/s |" in proc.stdout
    assert "| (b) agent.env.AtariEnv | 1 |" in proc.stdout
    assert "Targets:" in proc.stdout

    sps = result["steps_per_s"]
    for key in ALWAYS:
        assert sps[key] > 0, (key, result["rows"])
    assert result["single_vs_raw"] > 0
    assert result["single_vs_gymnasium"] > 0
    # Row (e) is n/a (null ratios) only where agent.workers does not exist.
    # Both (e) rows: the default setting (which the targets use), and every env in a worker.
    assert [r["key"] for r in result["rows"]][-2:] == ["workers_2", "workers_2_all_in_workers"]
    if importlib.util.find_spec("agent.workers") is None:
        assert sps["workers_2"] is None and sps["workers_2_all_in_workers"] is None
        assert result["workers2_vs_single"] is None
        assert result["workers2_vs_atarivectorenv"] is None
    else:
        assert sps["workers_2"] > 0, result["rows"]
        assert sps["workers_2_all_in_workers"] > 0, result["rows"]
        assert result["workers2_vs_single"] > 0
        assert result["workers2_vs_atarivectorenv"] > 0
        assert result["workers2_all_in_workers_vs_single"] > 0
    assert result["raw2proc_vs_raw"] > 0
    lock = result["lock_step"]  # the lock-step losses, from (b)'s own step times
    assert lock["steps"] == 2_000 and lock["step_mean_us"] > 0 and lock["step_std_us"] > 0
    assert lock["max_of_two_minus_mean_us"] > 0
    assert (lock["resets"] > 0) == (lock["reset_us"] is not None)
    assert "Lock step, from 2,000 steps of (b)" in proc.stdout
    assert len(result["targets"]) == 4
    assert result["machine"]["cpu_count"] > 0
