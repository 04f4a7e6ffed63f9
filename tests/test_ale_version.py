"""Another ale-py than the one whose emulator-state layout env.py reads is refused in one line."""

from __future__ import annotations

import ale_py
import pytest

from agent.cli import main
from agent.env import AtariEnv, UnsupportedALE, check_ale_version


@pytest.mark.parametrize("version", ["0.12.0", "0.12.1", "0.12.7.dev1"])
def test_ale_0_12_is_accepted(version):
    check_ale_version(version)


@pytest.mark.parametrize("version", ["0.9.1", "0.11.2", "0.13.0", "1.0.0", "weird"])
def test_another_ale_is_refused_naming_both_versions(version):
    with pytest.raises(UnsupportedALE, match=rf"ale-py {version} is installed, but atari-agent "
                                             r"needs ale-py 0\.12\.x") as info:
        check_ale_version(version)
    assert "pip install 'ale-py>=0.12,<0.13'" in str(info.value)
    assert "\n" not in str(info.value)


def test_the_env_and_the_cli_refuse_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(ale_py, "__version__", "0.10.1")
    with pytest.raises(UnsupportedALE):
        AtariEnv()
    assert main(["train", "--runs-dir", str(tmp_path), "--total-steps", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atari-agent train: ale-py 0.10.1 is installed")
    assert not any(tmp_path.iterdir())  # refused before a run directory was made
