"""`atari-agent demo` (README's first command) end to end, at its smallest budget."""

from __future__ import annotations

from agent.cli import main


def test_demo_trains_saves_and_scores_against_random(tmp_path, capsys):
    assert main(["demo", "--steps", "2000", "--episodes", "1", "--runs-dir",
                 str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (run,) = tmp_path.iterdir()
    assert run.name.startswith("phoenix-")
    assert (run / "checkpoints" / "ckpt-000000002000.pt").is_file()
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    policies = {r[1] for r in rows}
    assert len(rows) == 2 and "random" in policies, out
    assert any(p.endswith("ckpt-000000002000.pt") for p in policies)
    assert "protocol: sticky actions 0.25" in out and "atari-agent play" in out

    # `atari-agent runs` shows the demo's evaluation of its agent as the run's best
    agent = next(r for r in rows if r[1].endswith("ckpt-000000002000.pt"))
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(run.name)]
    assert line.split()[5] == agent[5]  # best eval = the agent's mean score


def test_demo_refuses_a_budget_too_small(tmp_path, capsys):
    assert main(["demo", "--steps", "100", "--runs-dir", str(tmp_path)]) == 2
    assert "--steps must be at least 2,000" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
