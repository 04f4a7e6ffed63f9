"""`atari-agent demo` (README's first command) end to end at its smallest budget, its settings
and its verdict on the agent against random."""

from __future__ import annotations

import json
import math

import pytest

from agent.cli import main
from agent.demo import comparison, demo_config, verdict


def test_demo_trains_saves_and_scores_against_random(tmp_path, capsys):
    out_json = tmp_path / "demo.json"
    runs = tmp_path / "runs"
    runs.mkdir()
    assert main(["demo", "--steps", "2000", "--episodes", "2", "--runs-dir", str(runs),
                 "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    (run,) = runs.iterdir()
    assert run.name.startswith("road_runner-")  # the preset's game
    assert (run / "checkpoints" / "ckpt-000000002000.pt").is_file()
    # the periodic evaluation (every 1,000 steps at this budget) kept best.pt: the agent shown
    assert "[eval] step 1,000:" in out and "[eval] step 2,000:" in out
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    policies = {r[1] for r in rows}
    assert len(rows) == 2 and "random" in policies, out
    assert any(p.endswith("best.pt") for p in policies), out
    assert "protocol: sticky actions 0.25" in out and "atari-agent play" in out
    assert "the trained agent scored" in out and "standard errors of the difference" in out

    # the JSON holds both policies' scores and the comparison the line states
    data = json.loads(out_json.read_text())
    assert data["game"] == "road_runner" and data["steps"] == 2_000 and data["episodes"] == 2
    assert data["agent"]["scores"] and len(data["random"]["scores"]) == 2
    assert data["difference"] == pytest.approx(data["agent"]["mean"] - data["random"]["mean"])
    assert data["beats_random"] == (data["z"] >= 3.0)
    assert data["verdict"] in out

    # `atari-agent runs` lists it with its best evaluation
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(run.name)]
    assert line.split()[5] != "-"


def test_demo_refuses_a_budget_too_small(tmp_path, capsys):
    assert main(["demo", "--steps", "100", "--runs-dir", str(tmp_path)]) == 2
    assert "--steps must be at least 2,000" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_demo_refuses_a_json_path_it_cannot_write_before_training(tmp_path, capsys):
    bad = tmp_path / "no-such-dir" / "demo.json"
    assert main(["demo", "--json", str(bad), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "does not exist" in err
    assert not [p for p in tmp_path.iterdir() if p.name != "no-such-dir"]


def test_demo_settings_come_from_the_preset_and_scale_with_a_smaller_budget():
    full = demo_config(None, None, "runs")
    assert (full.env.game, full.run.total_steps) == ("road_runner", 20_000)
    assert full.learner.learning_starts == 2_000 and full.explore.eps_decay_steps == 10_000
    assert full.run.checkpoint_every == 20_000 and full.replay.capacity >= 20_000
    assert full.env.terminal_on_life_loss and full.run.eval_every == 2_500

    small = demo_config("breakout", 6_000, "elsewhere")
    assert small.env.game == "breakout" and small.run.runs_dir == "elsewhere"
    assert small.learner.learning_starts == 1_500  # a quarter of the budget
    assert small.explore.eps_decay_steps == 4_000  # two thirds
    assert small.run.checkpoint_every == 6_000
    assert demo_config(None, 2_000, "runs").run.eval_every == 1_000  # twice at least
    with pytest.raises(ValueError, match="unknown game"):
        demo_config("no_such_game", None, "runs")


def _result(scores):
    return {"scores": scores, "mean": sum(scores) / len(scores), "episodes": len(scores)}


def test_the_verdict_is_the_difference_in_standard_errors_of_the_difference():
    agent, rand = _result([10.0, 12.0, 14.0]), _result([0.0, 1.0, 2.0])
    cmp = comparison(agent, rand)
    se = math.sqrt(4.0 / 3 + 1.0 / 3)  # sample variances 4 and 1, three episodes each
    assert cmp["difference"] == pytest.approx(11.0)
    assert cmp["se_difference"] == pytest.approx(se)
    assert cmp["z"] == pytest.approx(11.0 / se) and cmp["beats_random"]
    assert "clearly beats random" in verdict(agent, rand, cmp)

    close = comparison(_result([1.0, 3.0, 2.0]), rand)  # 1 point better, z = 1.22
    assert not close["beats_random"]
    assert "not clearly better than random" in verdict(_result([1.0, 3.0, 2.0]), rand, close)

    # no spread at all: any gain is beyond chance, none is not
    assert comparison(_result([5.0, 5.0]), _result([0.0, 0.0]))["beats_random"]
    assert not comparison(_result([0.0, 0.0]), _result([0.0, 0.0]))["beats_random"]
