"""A refused --resume writes nothing, so the run can still be resumed the right way."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from tests.test_cli_train import TINY


def _files(run: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flag, value, key", [("--capacity", "1200", "capacity"),
                                              ("--n-step", "2", "n_step")])
def test_a_resume_refused_by_its_replay_snapshot_changes_nothing(tmp_path, capsys, flag,
                                                                  value, key):
    run = tmp_path / "r"
    assert main(["train", *TINY, "--runs-dir", str(tmp_path), "--name", "r", "--envs", "1",
                 "--total-steps", "200", "--save-replay"]) == 0
    before = _files(run)
    capsys.readouterr()

    assert main(["train", "--resume", str(run), flag, value, "--total-steps", "300"]) == 2
    err = capsys.readouterr().err
    assert f"saved with {key}" in err and flag in err and err.count("\n") == 1, err
    assert _files(run) == before  # config.toml above all: a plain --resume must still work

    assert main(["train", "--resume", str(run), "--total-steps", "300"]) == 0
    assert "continuing exactly" in capsys.readouterr().out
