"""scripts/study_collapse.py: the defaults and the seed's broken configuration trained side by
side on a real game, what the seed watched summarized for both, a finished study reused."""

import json
import subprocess
import sys

import cv2
import numpy as np

from tests.benchrun import ROOT, load_script
from tests.procs import proc_running

SCRIPT = "scripts/study_collapse.py"


def study(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_quick_trains_both_configurations_and_a_finished_study_is_reused(tmp_path):
    out = tmp_path / "out"
    proc = study("--quick", "--mse", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    a, b, c = res["runs"]
    assert (a["run"], b["run"], c["run"]) == ("a-defaults", "b-broken", "c-broken-mse")
    # (b) is the seed's configuration: no clips, 10x the default learning rate
    assert (a["learner"]["lr"], a["learner"]["max_grad_norm"], a["learner"]["td_clip"]) == (
        1e-4, 10.0, 50.0)
    assert (b["learner"]["lr"], b["learner"]["max_grad_norm"], b["learner"]["td_clip"]) == (
        1e-3, 0.0, 0.0)
    assert (a["learner"]["huber_delta"], b["learner"]["huber_delta"]) == (1.0, 1.0)
    assert {**c["learner"], "huber_delta": 1.0} == b["learner"]
    assert c["learner"]["huber_delta"] == 1e9
    assert "--max-grad-norm" in res["commands"]["b-broken"]
    assert "--max-grad-norm" not in res["commands"]["a-defaults"]
    for run in (a, b, c):
        assert abs(run["random_agree"] - 100 / 6) < 1e-9  # Pong: 6 distinct ALE actions
        assert 0 <= run["agree"]["last"] <= 100 and run["loss"]["max"] > 0
        assert set(run["indicators"]) == {"agree_rises", "agree_holds", "loss_bounded",
                                          "q_under_100", "clip_delta_below_1_sometimes"}
        status = json.loads((out / run["run"] / "status.json").read_text())
        assert status["state"] == run["state"] and not proc_running(status["pid"])
    # (a) trains to the end; its last checkpoint is scored under the protocol
    assert a["state"] == "finished" and a["steps"] == 2_000 and len(a["series"]) >= 3
    assert [e["steps"] for e in a["evals"]] == [1_000, 2_000] and not a["watchdog"]
    assert (a["final"]["training_steps"], a["final"]["episodes"]) == (2_000, 2)
    assert a["final"]["checkpoint"].endswith("ckpt-000000002000.pt")
    # how much of its network responds to what it sees: a live young network about half its
    # units or more (the published study's dead broken network kept 22%, its healthy one 87%)
    assert 0.3 < a["final"]["units_on"] <= 1 and a["final"]["q_state_std"] > 1e-6
    for run in (b, c):  # the broken ones may kill the network this soon: then they halt
        assert run["state"] in ("finished", "halted")
        if run["state"] == "halted":
            assert run["watchdog"][0]["message"].startswith("step ")
            assert "dead network" in run["watchdog"][0]["message"]
            assert run["watchdog"][-1]["event"] == "halt"
        if run["final"] is not None:  # (a halt keeps the last healthy checkpoint)
            assert run["final"]["training_steps"] <= run["steps"]
    assert all(f"## {r}" in proc.stdout for r in ("a-defaults", "b-broken", "c-broken-mse"))
    assert res["random"]["checkpoint"] is None and res["random"]["episodes"] == 2
    assert "last checkpoint (2,000 steps): " in proc.stdout
    img = cv2.imdecode(np.fromfile(out / "collapse.png", np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] > 1000
    # run again (without c): the finished runs are reused, nothing trains
    again = study("--quick", "--out", str(out), "--json", str(tmp_path / "copy.json"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("reused") == 2
    copy = json.loads((tmp_path / "copy.json").read_text())
    assert [r["series"] for r in copy["runs"]] == [a["series"], b["series"]]
    # --summarize-only trains nothing, whatever the runs' state
    only = study("--quick", "--summarize-only", "--out", str(out))
    assert only.returncode == 0 and "reused" not in only.stderr, only.stderr[-3000:]
    assert "## a-defaults" in only.stdout and "% of its last conv layer's units" in only.stdout
    # another budget does not silently reuse them
    other = study("--steps", "4000", "--out", str(out))
    assert other.returncode != 0
    assert "an ended run of pong for 2,000 steps, not pong for 4,000" in other.stderr


def _write_run(run_dir, rows, events):
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(
        '[env]\ngame = "pong"\naction_set = "minimal"\n'
        "[learner]\nlr = 0.001\nmax_grad_norm = 0.0\ntd_clip = 0.0\nhuber_delta = 1.0\n"
        "n_step = 3\n"
        "double_dqn = true\n[watchdog]\nagree_drop = 30.0\nloss_factor = 50.0\n"
        "[run]\ntotal_steps = 1000\n")
    with open(run_dir / "metrics.jsonl", "w") as f:
        for obj in rows + events:
            f.write(json.dumps(obj) + "\n")


def test_the_summary_says_what_went_wrong(tmp_path):
    def row(steps, agree, loss, q, clip):
        return dict(steps=steps, agree=agree, loss=loss, q_min=-q, q_max=q, grad_norm=5.0,
                    clip_delta=clip, epsilon=0.1)

    rows = [dict(steps=100, loss=None)]  # before the first health check: skipped
    rows += [row(200, 17.0, 0.1, 1.0, 1.0), row(300, 60.0, 0.1, 2.0, 1.0),
             row(400, 20.0, 900.0, 500.0, 1.0)]
    events = [dict(event="divergence", steps=400, reasons=["Q blow-up: |Q| reached 500"],
                   action="rollback", rollback_to="ckpt-300.pt", message="step 400: Q"),
              dict(event="rollback", steps=400, checkpoint_steps=300, message="restored"),
              dict(event="eval", steps=400, mean=-20.0, std=1.0, episodes=10)]
    _write_run(tmp_path / "b", rows, events)
    (tmp_path / "b" / "status.json").write_text('{"state": "halted", "pid": 1}')
    s = load_script("study_collapse").summarize(tmp_path / "b")
    assert s["state"] == "halted" and [r["steps"] for r in s["series"]] == [200, 300, 400]
    assert s["agree"] == dict(first=17.0, max=60.0, last=20.0)
    assert s["q"] == dict(min=-500.0, max=500.0) and s["loss"]["max"] == 900.0
    assert s["indicators"] == dict(agree_rises=True, agree_holds=False, loss_bounded=False,
                                   q_under_100=False, clip_delta_below_1_sometimes=False)
    assert [(e["event"], e["steps"]) for e in s["watchdog"]] == [("divergence", 400),
                                                                 ("rollback", 400)]
    assert s["evals"] == [dict(steps=400, mean=-20.0, std=1.0, episodes=10)]
    module = load_script("study_collapse")
    assert [module._event(e) for e in s["watchdog"]] == [
        "Q blow-up at 400 -> rollback", "restored step 300"]


def test_bad_arguments_are_one_line_errors(tmp_path):
    for args, needle in ((["--steps", "0"], "--steps must be at least 1, got 0"),
                         (["--lr-factor", "0"], "--lr-factor must be positive, got 0"),
                         (["--json", str(tmp_path / "no" / "x.json")], "does not exist"),
                         (["--summarize-only"], "--summarize-only: no run a-defaults, b-broken")):
        proc = study(*args, "--out", str(tmp_path / "o"))
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
