"""Ctrl-C at awkward moments: held over blocks that must not be cut (a C++ module's import, a
pool's submit), and a Ctrl-C while the command starts up is one line with exit 130."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from agent import sigint
from agent.__main__ import main


def test_a_ctrl_c_inside_a_deferred_block_is_raised_when_it_ends():
    previous = signal.getsignal(signal.SIGINT)
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with sigint.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for i in range(1000):  # bytecode runs: an undeferred handler would raise here
                reached.append(i)
    assert len(reached) == 1000
    assert signal.getsignal(signal.SIGINT) is previous


def test_a_deferred_block_without_ctrl_c_changes_nothing():
    previous = signal.getsignal(signal.SIGINT)
    with sigint.deferred():
        pass
    assert signal.getsignal(signal.SIGINT) is previous


class _CtrlCOnImport:
    """A meta-path finder that sends this process a SIGINT when `agent.cli` is imported and
    then lets the normal import go on."""

    def find_spec(self, name, path=None, target=None):
        if name == "agent.cli":
            os.kill(os.getpid(), signal.SIGINT)
        return None


def test_ctrl_c_while_the_cli_imports_is_one_line_and_exit_130(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "agent.cli", raising=False)  # restored afterwards
    monkeypatch.setattr(sys, "meta_path", [_CtrlCOnImport(), *sys.meta_path])
    monkeypatch.setattr(sys, "argv", ["atari-agent", "games"])
    assert main() == 130
    captured = capsys.readouterr()
    assert captured.err.strip() == "atari-agent: interrupted"
    assert captured.out == ""  # the command did not run
