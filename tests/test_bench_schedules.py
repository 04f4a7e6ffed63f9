"""Smoke test of the scheduling benchmark: every schedule runs, the table and JSON come out."""


from tests.benchrun import run_bench

KEYS = ("single", "single_2proc", "lockstep_inline", "lockstep_workers", "free_inline",
        "free_workers")


def test_bench_schedules_quick_measures_every_schedule(tmp_path):
    proc, result = run_bench("bench_schedules.py", tmp_path / "sched.json")
    assert "| Schedule | envs | agent steps/s |" in proc.stdout
    assert "Fastest schedule in this run:" in proc.stdout
    assert [r["key"] for r in result["rows"]] == list(KEYS)
    for key in KEYS:  # every row ran (an error would make it null)
        assert result["steps_per_s"][key] > 0, result["rows"]
        assert len(next(r for r in result["rows"] if r["key"] == key)
                   ["steps_per_s_per_repeat"]) == 3
    assert result["vs_single"]["single"] == 1.0
    assert result["vs_ceiling"]["single_2proc"] == 1.0
    assert result["vs_ceiling"]["lockstep_inline"] > 0
