"""Smoke test of scripts/bench_time_to_skill.py: it times a real `atari-agent train` run from
the command's start to an evaluation at a target, stops the run by its pid, confirms the
crossing's checkpoint under the protocol, and says when a target was not reached."""

import json
import signal
import subprocess
import sys
import time

import cv2
import numpy as np

from tests.benchrun import ROOT, load_script
from tests.procs import proc_running, reaped

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

    # --rescore trains nothing and scores nothing already scored; it records the new limit
    again = bench("--out", str(out), "--rescore", "--confirm-tries", "2", timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "ckpt-" not in again.stderr and "| yes |" in again.stdout
    rescored = json.loads((out / "results.json").read_text())
    assert rescored["settings"]["confirm_tries"] == 2 and rescored["evals"] == res["evals"]
    assert rescored["crossings"] == res["crossings"] and len(c["tries"]) == 1
    refused = bench("--out", str(out), "--rescore", "--resume", timeout=60)
    assert refused.returncode == 2 and "choose one" in refused.stderr


def test_a_crossing_that_does_not_hold_is_followed_to_the_first_that_does(monkeypatch):
    """A 10-episode evaluation can cross by luck: when the first crossing's checkpoint scores
    below the target over the confirmation episodes, the next evaluations at or above it are
    scored in step order, each checkpoint once for all targets, up to --confirm-tries; the time
    to skill is the first confirmed one's."""
    import agent.evaluate

    bts = load_script("bench_time_to_skill")
    held = {1_000: -21.0, 2_000: -19.0, 3_000: -15.0, 4_000: -21.0}  # 30-episode means
    calls = []

    def fake_evaluate(targets, episodes, seed, epsilon, workers):
        (path,) = targets
        calls.append(path.name)
        return [dict(mean=held[int(path.stem.split("-")[1])], std=1.0, episodes=episodes)]

    monkeypatch.setattr(agent.evaluate, "evaluate", fake_evaluate)
    monkeypatch.setattr(agent.evaluate, "checkpoint_targets", lambda paths, overrides: paths)
    evals = [dict(steps=s, minutes=s / 1000, mean=m, std=0.0, episodes=10)
             for s, m in ((1_000, -18.0), (2_000, -17.0), (3_000, -16.0), (4_000, -10.0))]
    crossed = bts.crossings(evals, [-20.0, -16.0, -12.0, 0.0])
    bts.confirm(ROOT, crossed, evals, 30, 3, lambda msg: None)
    low, mid, high, top = crossed
    assert (low["steps"], low["confirmed_mean"], low["confirmed"]) == (1_000, -21.0, True)
    assert (low["confirmed_steps"], low["confirmed_minutes"]) == (2_000, 2.0)
    assert [t["steps"] for t in low["tries"]] == [1_000, 2_000]
    assert (mid["steps"], mid["confirmed_steps"]) == (3_000, 3_000)  # held at once
    assert high["confirmed"] is False and [t["steps"] for t in high["tries"]] == [4_000]
    assert top["steps"] is None and "tries" not in top
    assert sorted(calls) == ["ckpt-000000001000.pt", "ckpt-000000002000.pt",
                             "ckpt-000000003000.pt", "ckpt-000000004000.pt"]

    # at most --confirm-tries checkpoints; a crossing scored before (one score, the older
    # results.json) is not scored again
    calls.clear()
    crossed = bts.crossings(evals, [-20.0])
    crossed[0].update(checkpoint="old", confirmed_mean=-21.0, confirmed_std=1.0,
                      confirmed_episodes=30, confirmed=False)
    bts.confirm(ROOT, crossed, evals, 30, 1, lambda msg: None)
    assert calls == [] and crossed[0]["confirmed"] is False
    res = dict(settings=dict(game="pong", eval_episodes=10, eval_every=1_000,
                             confirm_episodes=30),
               machine={}, command=["python", "-m", "agent", "train"], stopped="finished",
               minutes=4.0, pieces=[dict(minutes=4.0)], crossings=crossed)
    monkeypatch.setattr(bts.benchio, "describe_machine", lambda m: "m")
    monkeypatch.setattr(bts.benchio, "describe_load", lambda m: "l")
    assert "| NO (1 scored) |" in bts.report(res)
    bts.confirm(ROOT, crossed, evals, 30, 3, lambda msg: None)  # a larger limit: --rescore
    assert calls == ["ckpt-000000002000.pt"] and crossed[0]["confirmed_steps"] == 2_000
    assert "at 2.0 min, 2,000 steps: -19.0 ± 1.0" in bts.report(res)


def test_a_stopped_then_clock_cut_benchmark_resumes_its_run_and_adds_up_the_minutes(tmp_path):
    """Three commands: stopped by SIGTERM after its first evaluation; resumed, the clock
    (--max-minutes) cuts it with a target unreached; resumed again, its run finishes at
    --max-steps. The run goes on from the checkpoint each stop saved, the evaluations and the
    clock carry over, and a resume that contradicts the first command is refused."""
    out = tmp_path / "out"
    cmd = [sys.executable, SCRIPT, "--targets=-21,5", "--max-steps", "3000", "--eval-every",
           "1000", "--eval-episodes", "1", "--confirm-episodes", "2", "--out", str(out), "--",
           "--learning-starts", "500", "--capacity", "5000", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    with reaped(proc):
        deadline = time.monotonic() + 240
        metrics = out / "run" / "metrics.jsonl"
        while b'"event": "eval"' not in (metrics.read_bytes() if metrics.exists() else b""):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-3000:]
    first = json.loads((out / "results.json").read_text())
    assert first["stopped"] == "interrupted" and "continue with" in stdout
    assert "confirmed" not in first["crossings"][0]  # nothing scored for a stopped benchmark
    status = json.loads((out / "run" / "status.json").read_text())
    assert not proc_running(status["pid"]) and 1_000 <= status["steps"] < 3_000

    # contradicting the first command, or too little time left: refused before anything runs
    for args, message in ((["--game", "breakout"], "ran with --game pong, this command asks "
                                                   "for breakout"),
                          (["--", "--lr", "1"], "pass nothing after -- (got --lr 1)"),
                          (["--max-minutes", "0.001"], "pass a larger --max-minutes")):
        refused = bench("--out", str(out), "--resume", *args, timeout=60)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr

    assert [e["steps"] for e in first["evals"]] == [1_000]  # read after the run stopped
    budget = first["minutes"] + 0.1  # six seconds more: the clock cuts it again
    second_proc = bench("--out", str(out), "--resume", "--max-minutes", str(budget))
    assert second_proc.returncode == 0, second_proc.stderr[-3000:]
    second = json.loads((out / "results.json").read_text())
    assert second["stopped"] == "max_minutes" and budget <= second["minutes"] < budget + 5
    assert [p["stopped"] for p in second["pieces"]] == ["interrupted", "max_minutes"]
    assert second["pieces"][1]["command"][2:4] == ["--resume", str(out / "run")]
    assert second["evals"][:len(first["evals"])] == first["evals"]
    low, high = second["crossings"]
    assert high["target"] == 5 and high["steps"] is None and "confirmed" not in high
    assert low["steps"] == 1_000 and low["confirmed_episodes"] == 2  # scored now
    assert "| 5 | not reached |" in second_proc.stdout and "in 2 commands" in second_proc.stdout

    third_proc = bench("--out", str(out), "--resume", "--max-minutes", "30")
    assert third_proc.returncode == 0, third_proc.stderr[-3000:]
    third = json.loads((out / "results.json").read_text())
    assert third["stopped"] == "finished" and len(third["pieces"]) == 3
    steps = [e["steps"] for e in third["evals"]]
    minutes = [e["minutes"] for e in third["evals"]]
    assert steps == [1_000, 2_000, 3_000] and minutes == sorted(minutes)
    assert third["minutes"] == sum(p["minutes"] for p in third["pieces"]) >= minutes[-1]
    assert third["settings"]["train_args"] == first["settings"]["train_args"]
    status = json.loads((out / "run" / "status.json").read_text())
    assert status["steps"] == 3_000 and status["state"] == "finished"
    assert third["crossings"][0] == low  # scored once (by the second command)
    assert third_proc.stderr.count("ckpt-000000001000.pt: ") == 0
    assert "is done" in bench("--out", str(out), "--resume", timeout=60).stderr


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
    proc = bench("--resume", "--out", str(tmp_path / "none"), timeout=60)
    assert proc.returncode == 2 and "no benchmark to continue in" in proc.stderr
