"""`atari-agent`: the command front. Parses arguments and hands over; no logic of its own."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from agent import games
from agent.config import SECTIONS, Config, field_docs, from_dict, load_toml


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


# ------------------------------------------------------------------------------ config flags
def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHT,WIDTH (e.g. 84,84), got {text!r}") from None


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field (--lr, --batch-size, --double-dqn/--no-double-dqn, ...)."""
    defaults = Config()
    seen: dict[str, str] = {}
    for section in SECTIONS:
        obj = getattr(defaults, section)
        docs = field_docs(type(obj))
        group = parser.add_argument_group(f"[{section}] settings (TOML table [{section}])")
        for f in dataclasses.fields(obj):
            flag = "--" + f.name.replace("_", "-")
            assert flag not in seen, f"{flag} is both {seen[flag]} and {section}.{f.name}"
            seen[flag] = f"{section}.{f.name}"
            default = getattr(obj, f.name)
            kwargs = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS,
                      "help": f"{docs.get(f.name, '')} (default: {default!r})".replace("%",
                                                                                       "%%")}
            if isinstance(default, bool):
                kwargs["action"] = argparse.BooleanOptionalAction
            elif isinstance(default, tuple):
                kwargs.update(type=_parse_shape, metavar="H,W")
            else:
                kwargs.update(type=type(default), metavar=type(default).__name__.upper())
            group.add_argument(flag, **kwargs)


def config_overrides(args: argparse.Namespace) -> dict:
    out: dict = {}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            out.setdefault(section, {})[name] = value
    return out


def _config(args: argparse.Namespace, base: Path | None = None) -> Config:
    overrides = config_overrides(args)
    if base is not None:
        return load_toml(base, overrides)
    if args.config:
        return load_toml(args.config, overrides)
    return from_dict(overrides, source="command line")


# ------------------------------------------------------------------------------ train
def _train(args: argparse.Namespace) -> int:
    from agent.checkpoint import CheckpointError, CheckpointStore
    from agent.runs import archive, has_checkpoints, latest_run, new_run_dir
    from agent.train import train

    try:
        resume_from = None
        if args.resume is not None:
            if args.fresh:
                raise ValueError("--resume and --fresh contradict each other: pick one")
            runs_dir = Path(config_overrides(args).get("run", {}).get("runs_dir", "runs"))
            run_dir = (latest_run(runs_dir) if args.resume == "latest" else Path(args.resume))
            if run_dir is None:
                raise ValueError(f"nothing to resume: no run directory with checkpoints in "
                                 f"{runs_dir}/ (see `atari-agent runs`)")
            if not (run_dir / "config.toml").is_file():
                raise ValueError(f"{run_dir} is not a run directory (no config.toml)")
            resume_from = CheckpointStore(run_dir).latest()
            if resume_from is None:
                raise ValueError(f"{run_dir} has no checkpoint to resume from")
            config = _config(args, base=run_dir / "config.toml")
            print(f"resuming {run_dir} from {resume_from.name}")
        else:
            config = _config(args)
            named = Path(config.run.runs_dir) / config.run.name if config.run.name else None
            if named is not None and has_checkpoints(named):
                if not args.fresh:
                    raise ValueError(
                        f"{named} already has checkpoints: pass --resume {named} to continue "
                        f"it, or --fresh to start new weights there (its files are archived)")
                print(f"--fresh: moved the previous files of {named} to {archive(named)}")
            run_dir = new_run_dir(config.run.runs_dir, config.env.game, config.run.name)
            print(f"run directory: {run_dir}")
        result = train(config, run_dir, resume_from=resume_from)
    except (ValueError, CheckpointError) as exc:
        print(f"atari-agent train: {exc}", file=sys.stderr)
        return 2
    print(f"{result.state}: {result.steps:,} steps, {result.episodes:,} episodes; "
          f"last checkpoint {result.checkpoint}")
    return {"finished": 0, "interrupted": 130, "halted": 3}[result.state]


def _runs(args: argparse.Namespace) -> int:
    from agent.runs import runs_table

    print(runs_table(args.runs_dir))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from agent.demo import demo

    try:
        return demo(args.game, args.steps, args.episodes, args.runs_dir)
    except ValueError as exc:
        print(f"atari-agent demo: {exc}", file=sys.stderr)
        return 2


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

    t = sub.add_parser(
        "train", help="train an agent (default: Phoenix, documented action set)",
        description="Train a clipped-gradient DQN agent. Every setting has a flag below and a "
        "TOML key (--config FILE); flags override the file. The effective config is saved as "
        "config.toml in the run directory (runs/<game>-<time>/ unless --name).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument("--config", metavar="FILE.toml", help="settings file with [env], [learner], "
                   "[explore], [replay], [watchdog], [run] tables")
    t.add_argument("--resume", nargs="?", const="latest", metavar="RUN_DIR",
                   help="continue a run from its latest checkpoint (default: the most recently "
                   "updated run under --runs-dir); flags given override its saved config")
    t.add_argument("--fresh", action="store_true",
                   help="with --name of a run that has checkpoints: start new weights there "
                   "(the old files move to an archive-<time>/ folder inside it)")
    add_config_flags(t)
    t.set_defaults(run=_train)

    r = sub.add_parser("runs", help="list run directories",
                       description="Run directories: game, state, steps, scores, checkpoints.")
    r.add_argument("--runs-dir", default="runs", help="where runs live (default: runs)")
    r.set_defaults(run=_runs)

    d = sub.add_parser(
        "demo", help="a short training run, then the agent against a random policy",
        description="Train briefly on GAME with demo settings (a few minutes on a CPU), save, "
        "then score the trained agent and a random policy under the same evaluation protocol.")
    d.add_argument("--game", default="phoenix")
    d.add_argument("--steps", type=int, default=30_000, help="agent steps of training")
    d.add_argument("--episodes", type=int, default=5, help="evaluation episodes per policy")
    d.add_argument("--runs-dir", default="runs")
    d.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
