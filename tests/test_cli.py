"""The `atari-agent` command front."""

import shutil
import subprocess

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
