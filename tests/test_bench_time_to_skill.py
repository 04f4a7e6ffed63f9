"""Smoke test of scripts/bench_time_to_skill.py: it times a real `atari-agent train` run from
the command's start to an evaluation at a target, stops the run by its pid, confirms the
crossing's checkpoint under the protocol, and says when a target was not reached."""

import json
import subprocess
import sys

import cv2
import numpy as np

from tests.benchrun import ROOT
from tests.procs import proc_running

SCRIPT = "scripts/bench_time_to_skill.py"


def bench(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_quick_reaches_its_target_stops_the_run_and_confirms(tmp_path):
    """Pong to -21 (any agent): the first evaluation crosses, the run is stopped, its checkpoint
    at that step scores -21 over 2 protocol episodes too (about 30 s here)."""
    out = tmp_path / "out"
    proc = bench("--quick", "--out", str(out), "--png", str(tmp_path / "copy.png"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["stopped"] == "target" and res["settings"]["targets"] == [-21.0]
    (first, *_) = res["evals"]
    assert first["steps"] == 1_000 and first["episodes"] == 1 and 0 < first["minutes"] < 5
    (c,) = res["crossings"]
    assert (c["target"], c["steps"], c["in_run_mean"]) == (-21.0, 1_000, first["mean"])
    assert c["minutes"] == first["minutes"] and c["confirmed_episodes"] == 2
    assert c["confirmed"] and c["confirmed_mean"] >= -21
    assert c["checkpoint"].endswith("ckpt-000000001000.pt")
    assert "| -21 | " in proc.stdout and "| yes |" in proc.stdout
    # the run was stopped as Ctrl-C stops it: its process is gone, its checkpoints saved
    status = json.loads((out / "run" / "status.json").read_text())
    assert status["state"] in ("stopped", "interrupted") and not proc_running(status["pid"])
    assert status["steps"] < 3_000
    for png in (out / "curves.png", tmp_path / "copy.png"):
        img = cv2.imdecode(np.fromfile(png, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[1] == 1100


def test_an_unreached_target_is_reported_and_max_minutes_stops_the_run(tmp_path):
    out = tmp_path / "out"
    # quick's budget with a step cap far away, so that the clock stops the run
    proc = bench("--targets=-21,5", "--max-minutes", "0.3", "--max-steps", "1000000",
                 "--eval-every", "1000", "--eval-episodes", "1", "--confirm-episodes", "2",
                 "--out", str(out), "--", "--learning-starts", "500", "--capacity", "5000",
                 "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["stopped"] == "max_minutes" and 0.3 <= res["minutes"] < 5
    low, high = res["crossings"]
    assert high["target"] == 5 and high["steps"] is None and "confirmed" not in high
    assert "| 5 | not reached |" in proc.stdout
    assert low["steps"] is None or low["confirmed_episodes"] == 2


def test_bad_arguments_are_refused_in_one_line_before_anything_runs(tmp_path):
    for args, message in ((["--eval-every", "0"], "--eval-every must be at least 1, got 0"),
                          (["--targets", "ten"], "--targets must be comma-separated numbers"),
                          (["--max-minutes", "0"], "--max-minutes must be positive, got 0")):
        proc = bench(*args, "--out", str(tmp_path / "out"), timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "out" / "run").mkdir(parents=True)
    proc = bench("--quick", "--out", str(tmp_path / "out"), timeout=60)
    assert proc.returncode == 2 and "exists (an earlier benchmark)" in proc.stderr
