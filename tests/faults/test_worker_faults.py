"""Evaluation workers that die or hang: reported within the timeout, the rest stopped, nothing
written, no process left behind. (The training env pool's own faults: tests/test_workers.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.procs import children_map, descendants, reaped, wait_gone

CKPT = "checkpoints/ckpt-000000000400.pt"


def _start_evaluation(trained_run, out, timeout: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "evaluate", str(trained_run / CKPT), "--episodes",
         "60", "--workers", "2", "--worker-timeout", str(timeout), "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _workers(parent: int, deadline_s: float = 60.0) -> tuple[list[int], set[int]]:
    """The pool's two worker pids (children of the forkserver, itself a child of `parent`)
    once both play, and every process below `parent`."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        children = children_map()
        workers = [w for c in children.get(parent, []) for w in children.get(c, [])]
        if len(workers) >= 2:
            time.sleep(3.0)  # both past start-up and playing episodes
            return workers, descendants(parent)
        time.sleep(0.1)
    pytest.fail("the evaluation workers did not start")


@pytest.mark.parametrize("fault, message", [
    (signal.SIGKILL, "an evaluation worker died"),
    (signal.SIGSTOP, "has not finished in 4 s: a worker is hung"),
])
def test_a_dead_or_hung_worker_stops_the_evaluation_cleanly(trained_run, tmp_path, fault,
                                                            message):
    out = tmp_path / "eval.json"
    proc = _start_evaluation(trained_run, out, timeout=4)
    with reaped(proc):
        workers, everyone = _workers(proc.pid)
        os.kill(workers[0], fault)  # a pid this test's child started
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=120)
        waited = time.monotonic() - t0
    assert proc.returncode == 2, err
    assert message in err and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("atari-agent evaluate: ")
    assert waited < 30  # the hang shows within the timeout of the episode that stalled
    assert not out.exists()
    assert not wait_gone(everyone, 10), "processes of the evaluation were left behind"
