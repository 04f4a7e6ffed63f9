"""Smoke test of scripts/bench_learning.py: both sides train on Breakout, every point is scored
under the protocol, the JSON, chart and table come out, and a cut benchmark resumes (each
side's training from its last saved point) without recomputing the points it had."""

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.benchrun import ROOT, run_bench

try:
    import ray  # noqa: F401 - the ours-ray side needs it (the [ray] extra)
    RAY = True
except ImportError:
    RAY = False


def common(tmp_path) -> tuple[str, ...]:
    # One torch thread a side and in-process evaluation: the test checks the plumbing, on a
    # machine that may be shared (torch's default threads slow down many times over then).
    return ("--game", "breakout", "--seeds", "0", "--threads", "1", "--eval-workers", "1",
            "--out", str(tmp_path / "out"), "--png", str(tmp_path / "bench.png"))


def sides_steps(result: dict) -> list[tuple[str, int]]:
    return [(p["side"], p["steps"]) for p in result["points"]]


def test_bench_learning_cut_and_resumed_completes_without_recomputing(tmp_path):
    """--quick in three pieces: cut after ours' first point; resumed, ours goes on from its
    checkpoint and SB3 is cut after its first point; resumed again with --parallel and a side
    added, SB3 goes on from its model and replay buffer while the new side trains beside it
    (one process each, points evaluated one at a time into one results.json). Then a resume
    with nothing left to do, and the finished benchmark merged with another."""
    json_path, args = tmp_path / "bench.json", common(tmp_path)
    proc, first = run_bench("bench_learning.py", json_path, *args, "--stop-after-points", "1",
                            timeout=600)
    assert sides_steps(first) == [("ours", 1_000)]
    assert "continue with --resume" in proc.stdout
    assert [r["game"] for r in first["random"]] == ["breakout"]
    assert first["runs"]["ours/breakout/seed0"]["state"] == "interrupted"

    proc, second = run_bench("bench_learning.py", json_path, *args, "--resume",
                             "--stop-after-points", "2", timeout=600)
    assert sides_steps(second) == [("ours", 1_000), ("ours", 2_000), ("sb3", 1_000)]
    assert second["points"][0] == first["points"][0]  # kept as it was: not recomputed
    assert second["random"] == first["random"]
    assert second["runs"]["ours/breakout/seed0"]["resumed_from"] == 1_000
    assert second["runs"]["sb3/breakout/seed0"]["state"] == "interrupted"

    # resumed with a side added: ours with Ape-X actors on a local Ray (the [ray] extra)
    sides = ["ours", "ours-ray", "sb3"] if RAY else ["ours", "sb3"]
    proc, third = run_bench("bench_learning.py", json_path, *args, "--resume", "--sides",
                            ",".join(sides), "--parallel", timeout=600)
    assert all(p in third["points"] for p in second["points"])  # kept, not recomputed
    assert third["runs"]["sb3/breakout/seed0"]["resumed_from"] == 1_000
    assert third["invocations"] == 3
    check_complete(third, proc.stdout, tmp_path, sides)
    if RAY:
        assert third["runs"]["ours-ray/breakout/seed0"]["ray_actors"] == 2
        assert "ours-ray/breakout/seed 0: agent (this repository)" in proc.stdout
        assert ", 2 Ray actors; finished" in proc.stdout

    proc, fourth = run_bench("bench_learning.py", json_path, *args, "--resume", "--sides",
                             ",".join(sides), timeout=300)
    assert fourth["points"] == third["points"] and fourth["random"] == third["random"]
    # nothing was trained, nothing scored again
    assert "] training " not in proc.stderr and " evaluated in " not in proc.stderr
    check_merge(third, tmp_path)


def check_merge(result: dict, tmp_path) -> None:
    """--merge overlays benchmarks that differ only in sides, action set or shared outputs
    (here: a copy of `result` as if ours had played the documented set with shared outputs)."""
    other = json.loads(json.dumps(result))
    other["settings"].update(action_set="documented", shared_outputs=True, sides=["ours"])
    other["points"] = [{**p, "action_set": "documented", "shared_outputs": True}
                       for p in other["points"] if p["side"] == "ours"]
    other["runs"] = {k: r for k, r in other["runs"].items() if r["side"] == "ours"}
    for r in other["random"]:
        r.update(action_set="documented", mean=r["mean"] + 100)
    (tmp_path / "doc").mkdir()
    (tmp_path / "doc" / "results.json").write_text(json.dumps(other))
    dirs = f"{tmp_path / 'out'},{tmp_path / 'doc'}"
    proc = subprocess.run([sys.executable, "scripts/bench_learning.py", "--merge", dirs,
                           "--out", str(tmp_path / "merged")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    ours = [p for p in result["points"] if p["side"] == "ours"]
    assert len(merged["points"]) == len(result["points"]) + len(ours)
    assert len(merged["random"]) == 2
    assert set(merged["runs"]) == {*result["runs"], "ours documented shared/breakout/seed0"}
    assert "| ours documented shared | breakout | 0 | 2,000 |" in proc.stdout
    assert "| random documented | breakout |" in proc.stdout
    assert (tmp_path / "merged" / "curves.png").stat().st_size > 10_000
    other["settings"]["steps"] = 3_000
    (tmp_path / "doc" / "results.json").write_text(json.dumps(other))
    assert "ran with steps = 3000 but" in refused("--merge", dirs, "--out", str(tmp_path / "m2"))
    assert "one of the merged benchmarks" in refused("--merge", dirs, "--out",
                                                     str(tmp_path / "doc"))


def check_complete(result: dict, stdout: str, tmp_path, sides=("ours", "sb3")) -> None:
    s = result["settings"]
    assert (s["steps"], s["eval_every"], s["eval_episodes"]) == (2_000, 1_000, 2)
    assert (s["learning_starts"], s["replay_capacity"], s["batch_size"]) == (500, 5_000, 32)
    assert (s["train_freq"], s["target_update_steps"], s["target_update_updates_ours"]) == \
        (4, 1_000, 250)
    assert (s["eps_start"], s["eps_end"], s["eps_decay_steps"]) == (1.0, 0.01, 200)
    # SB3's epsilon reaches 0.01 at a tenth of the budget, before learning starts: so does ours
    assert s["ours_explore"] == {"eps_start": 0.01, "eps_end": 0.01, "eps_decay_steps": 0}
    # (a side added by a resume comes after the first command's)
    assert (s["games"], s["seeds"], sorted(s["sides"])) == (["breakout"], [0], sorted(sides))
    assert s["repeat_action_probability"] == 0.25 and s["eval_epsilon"] == 0.001
    assert s["torch_threads"] == 1 and s["action_set"] == "minimal"
    assert result["quick"] is True and result["machine"]["cpu_count"] >= 1
    # the script checked that both sides' minimal action sets are in the same order
    assert result["action_orders"] == {"breakout": ["NOOP", "FIRE", "RIGHT", "LEFT"]}

    # sorted: with --parallel the sides' points interleave
    assert sorted(sides_steps(result)) == [(side, n) for side in sorted(sides)
                                           for n in (1_000, 2_000)]
    for side in sides:
        points = [p for p in result["points"] if p["side"] == side]
        walls = [p["wall_s"] for p in points]
        assert walls[0] > 0 and walls == sorted(set(walls)), walls  # increasing
        for p in points:
            assert (p["game"], p["seed"], p["action_set"]) == ("breakout", 0, "minimal")
            assert p["episodes"] == len(p["scores"]) == 2
            assert math.isfinite(p["mean"]) and math.isfinite(p["std"]) and p["mean"] >= 0
            assert p["mean"] == pytest.approx(np.mean(p["scores"]))
            assert p["std"] == pytest.approx(np.std(p["scores"]))
            assert sum(p["buttons"].values()) == pytest.approx(1.0)  # each side's presses
    (random,) = result["random"]
    assert random["game"] == "breakout" and random["episodes"] == 2
    assert math.isfinite(random["mean"]) and random["mean"] >= 0

    assert set(result["runs"]) == {f"{side}/breakout/seed0" for side in sides}
    for run in result["runs"].values():
        assert run["state"] == "finished" and run["n_actions"] == 4
        assert run["torch_threads"] == 1 and run["device"] == "cpu"
    assert result["runs"]["sb3/breakout/seed0"]["precision"] == "fp32"

    out = tmp_path / "out"
    assert json.loads((out / "results.json").read_text()) == result
    for png in (tmp_path / "bench.png", out / "curves.png"):
        img = cv2.imdecode(np.fromfile(png, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[1] == 1100 and 300 <= img.shape[0] <= 1000
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10  # drawn, not blank
    # the saved policies stay; the replay snapshots only a resume needs are gone
    for side in set(sides) - {"sb3"}:
        assert len(list((out / f"breakout/{side}-seed0/checkpoints").glob("ckpt-*.pt"))) == 2
    assert len(list((out / "breakout/sb3-seed0").glob("model-*.zip"))) == 2
    assert not list(out.glob("breakout/*/replay-*")) + list(out.glob("breakout/*/*/replay-*"))

    assert "| side | game | seed | steps | wall min | mean ± std |" in stdout
    for side in sides:
        assert f"| {side} | breakout | 0 | 2,000 |" in stdout
    assert "| random | breakout | - | - | - |" in stdout


def refused(*args: str) -> str:
    """The one line an invalid command prints (it must exit with status 2 before any work)."""
    proc = subprocess.run([sys.executable, "scripts/bench_learning.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench_learning.py: error: "), lines
    return lines[0]


def test_bench_learning_refuses_bad_input_in_one_line(tmp_path):
    out = tmp_path / "out"
    assert "unknown side 'foo' in --sides: accepted: ours, ours-ray, sb3" in refused(
        "--sides", "ours,foo")
    assert "--ray-actors must be >= 1, got 0" in refused("--sides", "ours-ray", "--ray-actors",
                                                         "0")
    assert "--steps must be a positive number of agent steps, got 0" in refused("--steps", "0")
    assert "--eval-every (8,000) must not exceed --steps (4,000)" in refused(
        "--steps", "4000", "--eval-every", "8000")
    assert "--shared-outputs is a setting of ours" in refused("--shared-outputs")
    assert "--resume:" in refused("--resume", "--out", str(out))
    assert not out.exists()  # nothing made for a refused command
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"settings": {"steps": 4_000}, "points": []}))
    line = refused("--quick", "--resume", "--out", str(out))
    assert "holds a benchmark with steps = 4000, this command asks for 2000" in line
    assert "already holds a benchmark" in refused("--quick", "--out", str(out))
