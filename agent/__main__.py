"""The `atari-agent` command (and `python -m agent`). A Ctrl-C while the CLI imports ale-py
(a C++ module: cut inside its init, the process aborted) is held until the import is done,
then ends the command in one line with exit 130, as a Ctrl-C during a command does."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from agent import sigint

        with sigint.deferred():
            from agent.cli import main as cli_main
        return cli_main()
    except KeyboardInterrupt:
        print("\natari-agent: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
