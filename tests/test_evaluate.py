"""`atari-agent evaluate`: checkpoints of a short Phoenix run scored under the protocol, in
workers, to a table and JSON, next to the random baseline; bad input is one clear line."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agent import checkpoint
from agent import evaluate as ev
from agent.checkpoint import CheckpointStore
from agent.cli import build_parser, main
from agent.references import human_normalized
from tests.procs import descendants, proc_running, reaped

CKPT_200 = "checkpoints/ckpt-000000000200.pt"
CKPT_400 = "checkpoints/ckpt-000000000400.pt"
JSON_KEYS = {"checkpoint", "label", "policy", "game", "training_steps", "episodes", "mean", "std",
             "median", "min", "max", "mean_length", "hns", "truncated", "scores", "lengths",
             "buttons", "protocol"}
"""The keys of each `--json` result: scripts read them, so they change only on purpose."""
PROTOCOL_KEYS = {"repeat_action_probability", "terminal_on_life_loss", "max_frames",
                 "noop_max", "frameskip", "action_set", "epsilon", "score", "seed"}


def test_a_run_directory_to_json_beside_the_random_baseline(trained_run, tmp_path, capsys):
    # The protocol's defaults, as the command parses them; the run below cuts episodes at
    # 20,000 frames (whole Phoenix games take half a minute here), and says so in its JSON.
    defaults = build_parser().parse_args(["evaluate", str(trained_run)])
    assert (defaults.sticky, defaults.max_frames, defaults.seed) == (0.25, 108_000, 0)
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(trained_run), "--episodes", "2", "--with-random",
                 "--max-frames", "20000", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert len(results) == 3  # both checkpoints of the run and the random policy
    for r in results:
        assert set(r) == JSON_KEYS and set(r["protocol"]) == PROTOCOL_KEYS, r
        assert r["game"] == "phoenix" and r["episodes"] == 2 and len(r["scores"]) == 2
        assert r["min"] <= r["median"] <= r["max"] and r["mean_length"] > 0
        assert r["hns"] == pytest.approx(human_normalized("phoenix", r["mean"]))
        assert list(r["buttons"]) == ["noop", "ZAP", "FIRE", "FIRE+ZAP"]
        assert sum(r["buttons"].values()) == pytest.approx(1.0)
        p = r["protocol"]
        assert (p["repeat_action_probability"], p["terminal_on_life_loss"], p["max_frames"],
                p["noop_max"], p["seed"]) == (0.25, False, 20_000, 30, 0)
    by_policy = {r["policy"]: r for r in results}
    assert by_policy["random"]["checkpoint"] is None
    assert by_policy["random"]["protocol"]["epsilon"] == 1.0
    assert by_policy["greedy"]["protocol"]["epsilon"] == 0.001
    assert {r["checkpoint"] for r in results if r["checkpoint"]} == {
        str(trained_run / CKPT_200), str(trained_run / CKPT_400)}
    means = [r["mean"] for r in results]
    assert means == sorted(means, reverse=True)  # best first
    # the table: one row per policy, best first, with the protocol under it
    rows = [line for line in printed.splitlines() if line[:1].isdigit()]
    assert len(rows) == 3 and "random (documented actions)" in printed
    assert "ckpt-000000000400.pt" in printed and "sticky actions 0.25" in printed
    assert "20,000-frame cap" in printed
    assert "epsilon 0.001 (random policy: 1.0)" in printed
    assert "buttons n/Z/F/FZ %" in printed


def test_an_episode_counts_the_buttons_its_policy_pressed():
    """What evaluation reports about ZAP (Phoenix's shield): every agent step's button."""
    from agent.config import EnvConfig
    from agent.env import AtariEnv
    from agent.protocol import protocol_config, run_episodes, summarize

    config = protocol_config(EnvConfig(game="phoenix"), max_frames=3_000)

    def make_env(seed):
        return AtariEnv(config, seed)

    shield = run_episodes(make_env, lambda obs: 1, 1, seed=0, epsilon=0.0)  # noop+ZAP only
    (e,) = shield
    assert e.buttons == (0, e.length, 0, 0) and e.length > 0
    assert summarize(shield)["buttons"] == {"noop": 0.0, "ZAP": 1.0, "FIRE": 0.0,
                                            "FIRE+ZAP": 0.0}
    random = run_episodes(make_env, None, 2, seed=0, epsilon=1.0)
    assert [sum(e.buttons) for e in random] == [e.length for e in random]
    shares = summarize(random)["buttons"]
    assert all(0.15 < v < 0.35 for v in shares.values()), shares  # uniform over 4 buttons


def test_results_depend_on_the_seed_not_on_the_workers(trained_run):
    # Episodes cut at 2,000 frames (a full Phoenix game takes minutes here): what is compared
    # is every step's action, which the cut does not change.
    cut = {"max_frames": 2_000}
    targets = ev.checkpoint_targets([trained_run / CKPT_400], cut)
    targets.append(ev.random_target(targets[0].env, cut))
    serial = ev.evaluate(targets, episodes=3, seed=7, workers=1)
    parallel = ev.evaluate(targets, episodes=3, seed=7, workers=2)
    assert [r["scores"] for r in serial] == [r["scores"] for r in parallel]
    assert [r["lengths"] for r in serial] == [r["lengths"] for r in parallel]
    assert [r["buttons"] for r in serial] == [r["buttons"] for r in parallel]
    other = ev.evaluate(targets[1:], episodes=3, seed=8, workers=1)
    assert (other[0]["scores"], other[0]["buttons"]) != (serial[1]["scores"],
                                                         serial[1]["buttons"])


def test_the_protocol_overrides_reach_the_episodes(trained_run):
    target = ev.checkpoint_targets([trained_run / CKPT_400], {"max_frames": 200})[0]
    result = ev.evaluate([target], episodes=2, seed=0, workers=1)[0]
    assert result["protocol"]["max_frames"] == 200
    assert result["truncated"] == 2 and max(result["lengths"]) <= 200 // 4 + 1


def test_random_policy_on_a_named_game(tmp_path, capsys):
    assert main(["evaluate", "--policy", "random", "--game", "pong", "--episodes", "1",
                 "--max-frames", "400", "--json", str(tmp_path / "r.json")]) == 0
    captured = capsys.readouterr()
    assert "epsilon 1.0 (random policy)" in captured.out
    # not a terminal: the progress is a plain line (the last one at the end), no carriage return
    assert "  1/1 episodes (100%)" in captured.err and "\r" not in captured.err
    (r,) = json.loads((tmp_path / "r.json").read_text())
    assert (r["game"], r["policy"], r["protocol"]["action_set"]) == ("pong", "random",
                                                                     "documented")
    assert r["mean"] == pytest.approx(r["scores"][0]) and r["hns"] is not None


def test_best_is_listed_only_when_it_is_not_a_kept_copy(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    store = CheckpointStore(run)
    saved = checkpoint.load(run / CKPT_400)
    store.save_best({k: v for k, v in saved.items() if k not in ("format", "version")},
                    400, 1.0)
    assert [p.name for p in ev.checkpoint_files(run)] == [
        "ckpt-000000000200.pt", "ckpt-000000000400.pt"]
    (run / CKPT_400).unlink()
    assert [p.name for p in ev.checkpoint_files(run)] == ["ckpt-000000000200.pt", "best.pt"]


def test_table_ranks_best_first_within_each_game():
    def result(game, mean, label):
        return {"game": game, "mean": mean, "std": 0.0, "median": mean, "min": mean,
                "max": mean, "mean_length": 10.0, "episodes": 1, "label": label,
                "training_steps": None, "hns": human_normalized(game, mean)}

    results = [result("pong", -20.0, "a"), result("breakout", 3.0, "b"),
               result("pong", 5.0, "c"), result("breakout", 30.5, "d")]
    results[3]["buttons"] = {"noop": 0.4, "ZAP": 0.05, "FIRE": 0.5, "FIRE+ZAP": 0.05}
    assert [r["label"] for r in ev.ranked(results)] == ["c", "a", "d", "b"]
    lines = ev.table(results).splitlines()
    assert lines[2].split()[:3] == ["1", "c", "pong"] and lines[2].endswith(" -")
    assert lines[4].split()[-2:] == ["100.0", "40/5/50/5"]  # HNS %, buttons n/Z/F/FZ %
    # "eps" read as epsilon: the episode count's column says what it is
    header = lines[0].split()
    assert "episodes" in header and "eps" not in header


def _result(policy: str, epsilon: float) -> dict:
    return {"policy": policy, "protocol": {"repeat_action_probability": 0.25,
                                           "max_frames": 108_000, "noop_max": 30,
                                           "epsilon": epsilon, "seed": 3}}


def test_the_protocol_line_names_the_random_policy_only_when_one_ran():
    greedy = ev.protocol_line([_result("greedy", 0.001), _result("greedy", 0.001)])
    assert "epsilon 0.001, seed 3" in greedy and "random" not in greedy.split(";")[0]
    both = ev.protocol_line([_result("greedy", 0.001), _result("random", 1.0)])
    assert "epsilon 0.001 (random policy: 1.0), seed 3" in both
    alone = ev.protocol_line([_result("random", 1.0)])
    assert "epsilon 1.0 (random policy), seed 3" in alone


class _Clock:
    def __init__(self, times: list[float]):
        self.times = iter(times)

    def __call__(self) -> float:
        return next(self.times)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_in_a_log_is_a_plain_line_every_few_seconds():
    out = io.StringIO()  # not a terminal: a log file, a pipe, CI
    meter = ev.Progress(5, out, every=10.0, clock=_Clock([0.0, 3.0, 11.0, 12.0, 25.0, 26.0]))
    for _ in range(5):
        meter.tick()
    assert out.getvalue().splitlines() == ["  2/5 episodes (40%), 11 s",
                                           "  4/5 episodes (80%), 25 s",
                                           "  5/5 episodes (100%), 26 s"]


def test_progress_on_a_terminal_is_one_counter_redrawn():
    out = _Terminal()
    meter = ev.Progress(3, out)
    for _ in range(3):
        meter.tick()
    assert out.getvalue() == "\r  1/3 episodes\r  2/3 episodes\r  3/3 episodes\n"
    ev.Progress(3, None).tick()  # silent


def test_training_does_not_import_the_evaluate_command():
    """The protocol lives in agent/protocol.py; the pool, table and JSON are the command's."""
    code = ("import sys, agent.train; "
            "sys.exit('agent.evaluate' in sys.modules or 'agent.protocol' not in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _write_truncated(path: Path, source: Path) -> None:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_other_version(path: Path, source: Path) -> None:
    saved = checkpoint.load(source)
    saved["version"] = checkpoint.VERSION + 1
    torch.save(saved, path)


BAD = [
    ("missing", None, "does not exist"),
    ("truncated", _write_truncated, "truncated or corrupt"),
    ("random bytes", lambda p, s: p.write_bytes(os.urandom(4096)), "truncated or corrupt"),
    ("other version", _write_other_version, f"format version {checkpoint.VERSION + 1}"),
]


@pytest.mark.parametrize("name, write, message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_checkpoint_is_one_line_and_nothing_is_written(trained_run, tmp_path, capsys,
                                                             name, write, message):
    bad = tmp_path / "bad.pt"
    if write is not None:
        write(bad, trained_run / CKPT_400)
    before = sorted(tmp_path.iterdir())
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(trained_run / CKPT_400), str(bad), "--episodes", "1",
                 "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("atari-agent evaluate: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(tmp_path.iterdir()) == before  # no JSON, nothing else


@pytest.mark.parametrize("args, message", [
    (["--policy", "random", "--game", "pongg"], "unknown game 'pongg'"),
    (["{run}", "--json", "{tmp}/no/such/dir/e.json"], "does not exist"),
    (["{run}", "--json", "{tmp}"], "is a directory"),
    (["{tmp}"], "is not a run directory"),
    (["{empty}"], "has no checkpoints yet"),
    (["{run}", "--episodes", "0"], "--episodes must be >= 1"),
    (["{run}", "--sticky", "1.5"], "--sticky must be in [0.0, 1.0]"),
    ([], "give checkpoints or run directories"),
])
def test_bad_arguments_are_one_line(trained_run, tmp_path, capsys, args, message):
    empty = tmp_path / "empty-run"
    (empty / "checkpoints").mkdir(parents=True)
    args = [a.format(run=trained_run, tmp=tmp_path, empty=empty) for a in args]
    before = sorted(tmp_path.rglob("*"))
    assert main(["evaluate", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert sorted(tmp_path.rglob("*")) == before


def test_ctrl_c_stops_the_workers_and_writes_nothing(trained_run, tmp_path):
    out = tmp_path / "eval.json"
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "evaluate",
                             str(trained_run / CKPT_400), "--episodes", "40", "--workers", "2",
                             "--json", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while len(workers) < 3 and time.monotonic() < deadline:  # forkserver + 2 workers
            workers = descendants(proc.pid)
            time.sleep(0.2)
        assert len(workers) >= 3, "the workers did not start"
        time.sleep(1.0)  # episodes under way
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists()
    deadline = time.monotonic() + 10
    while any(proc_running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if proc_running(p)]


def test_ctrl_c_inside_a_submit_stops_the_worker_it_started(monkeypatch):
    """A Ctrl-C that lands while `submit` starts a worker (before anything is pending) still
    stops that worker by pid; before, it was left to start on its own."""
    from concurrent.futures import ProcessPoolExecutor

    pools = []
    real_submit = ProcessPoolExecutor.submit

    def submit_then_ctrl_c(pool, *args, **kwargs):
        future = real_submit(pool, *args, **kwargs)
        pools.append(list(pool._processes.values()))  # the workers this submit started
        os.kill(os.getpid(), signal.SIGINT)
        return future

    monkeypatch.setattr(ProcessPoolExecutor, "submit", submit_then_ctrl_c)
    target = ev.random_target(ev.EnvConfig(game="pong"), {"max_frames": 400})
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate([target], episodes=4, workers=2)
    (started,) = pools  # the interrupt came at the first submit
    assert started
    exits = [p.exitcode for p in started]  # killed by pid, not left to run the episode
    assert all(code == -signal.SIGKILL for code in exits), exits
