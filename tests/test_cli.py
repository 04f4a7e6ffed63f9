"""The `atari-agent` command front."""

import shutil
import subprocess

import pytest

from agent.cli import main


def test_games_lists_every_game_with_its_binding(capsys):
    assert main(["games"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["game", "profile", "movement", "ZAP"]
    phoenix = next(line for line in lines if line.startswith("phoenix "))
    assert phoenix.split()[1:4] == ["yes", "horizontal", "DOWN"] and "force shield" in phoenix
    tetris = next(line for line in lines if line.startswith("tetris "))
    assert tetris.split()[1:4] == ["default", "eight_way", "inert"]
    assert "104 games, 11 with a profile" in out  # 108 ROMs, 4 of them unloadable


def test_games_shows_one_game(capsys):
    assert main(["games", "beam_rider"]) == 0
    out = capsys.readouterr().out
    assert "ZAP = UP (torpedo" in out and "RIGHT+FIRE+ZAP     -> UPRIGHTFIRE" in out


def test_unknown_game_is_one_clear_line_and_exit_code_2(capsys):
    assert main(["games", "phenix"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Did you mean: phoenix" in err


def test_the_console_script_is_installed():
    exe = shutil.which("atari-agent")
    assert exe, "pip install -e . installs the atari-agent command"
    proc = subprocess.run([exe, "games", "pong"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "pong: movement horizontal" in proc.stdout


def _refused(capsys, argv):
    """main(argv) stops as argparse does (exit status 2); its one line on stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "usage:" not in err, err
    return err


@pytest.mark.parametrize("typo", ["--total-stpes", "--total-step"])  # a prefix is no flag
def test_an_unknown_train_flag_is_one_line_with_a_suggestion(tmp_path, capsys, typo):
    err = _refused(capsys, ["train", "--runs-dir", str(tmp_path), typo, "100"])
    assert err.startswith(f"atari-agent train: unknown option {typo}; did you mean "
                          f"--total-steps?")
    assert "atari-agent train --help" in err
    assert not list(tmp_path.iterdir())  # no run started


@pytest.mark.parametrize("argv, flag", [
    (["evaluate", "run", "--episode", "3"], "--episodes"),
    (["play", "run", "--max-step", "3"], "--max-steps"),
    (["demo", "--step", "3000"], "--steps"),
    (["runs", "--runs", "x"], "--runs-dir"),
    (["plot", "run", "--widht", "800"], "--width"),
])
def test_no_command_takes_an_abbreviated_or_misspelt_flag(capsys, argv, flag):
    err = _refused(capsys, argv)
    assert err.startswith(f"atari-agent {argv[0]}: unknown option ")
    assert f"did you mean {flag}?" in err


@pytest.mark.parametrize("argv, needles", [
    (["train", "--lr", "abc"], ["atari-agent train: --lr", "'abc'", "expected a number"]),
    (["train", "--total-steps", "lots"], ["--total-steps", "'lots'", "expected a whole number"]),
    (["play", "x.pt", "--episodes", "two"], ["atari-agent play: --episodes", "'two'"]),
    (["evaluate", "--seed", "0.5"], ["atari-agent evaluate: --seed", "'0.5'"]),
    (["train", "--preset", "slow"], ["--preset", "'slow'", "fast-gpu"]),
])
def test_a_bad_flag_value_is_one_line_naming_flag_value_and_what_is_accepted(capsys, argv,
                                                                             needles):
    err = _refused(capsys, argv)
    for needle in needles:
        assert needle in err, err


def test_an_unknown_command_is_one_line(capsys):
    err = _refused(capsys, ["trian"])
    assert err.startswith("atari-agent: ") and "'trian'" in err and "train" in err
