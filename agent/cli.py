"""`atari-agent`: the command front. Parses arguments and hands over; no logic of its own."""

from __future__ import annotations

import argparse
import sys

from agent import games


def _games(args: argparse.Namespace) -> int:
    if args.game:
        try:
            print(games.describe_game(args.game))
        except ValueError as exc:
            print(f"atari-agent games: {exc}", file=sys.stderr)
            return 2
        return 0
    print(games.games_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atari-agent",
        description="Deep Q-learning for Atari with a native emulator bridge.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    g = sub.add_parser(
        "games",
        help="list every game ale-py can load, with its action bindings",
        description="Every game ale-py can load: its movement axis, what ZAP is bound to, and "
        "whether it has a profile. With GAME: that game's actions, documented and minimal.",
    )
    g.add_argument("game", nargs="?", help="one game's action table (e.g. phoenix)")
    g.set_defaults(run=_games)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
