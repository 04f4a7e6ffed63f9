"""scripts/bench_threads.py --quick: real training runs with one torch thread, idle and beside a
spinning process, each stopped by Ctrl-C; the table, the JSON, and no process left behind."""

from __future__ import annotations

from tests.benchrun import run_bench, with_root_on_path
from tests.procs import wait_gone


def test_bench_threads_quick_measures_idle_and_busy(tmp_path):
    proc, result = run_bench("bench_threads.py", tmp_path / "threads.json", timeout=600,
                             env=with_root_on_path())
    assert "| threads | OMP_WAIT_POLICY | SPS idle | SPS busy | busy/idle |" in proc.stdout
    assert "| 1 | default |" in proc.stdout
    cells = result["cells"]
    assert [(c["threads"], c["wait_policy"], c["busy"]) for c in cells] == [
        (1, "default", False), (1, "default", True)]
    for c in cells:
        assert c["sps"] > 0 and c["updates_per_s"] > 0, c
        # ~one update per 4 agent steps in the learning phase
        assert 0.15 < c["updates_per_s"] / c["sps"] < 0.35, c
        assert c["train_exit"] == 130  # stopped by its Ctrl-C, which saves and exits 130
    assert len(cells[0]["pids"]) == 1 and len(cells[1]["pids"]) == 2  # train (+ the spinner)
    assert not wait_gone([p for c in cells for p in c["pids"]])
    assert result["machine"]["cpu_count"] >= 1 and result["learning_starts"] == 600
