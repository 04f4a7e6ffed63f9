"""`atari-agent`: the command front. Parses arguments and hands over; no logic of its own."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import shlex
import sys
from pathlib import Path
from typing import NoReturn

from agent import games, sigint
from agent.config import SECTIONS, Config, field_docs, from_dict, load_toml
from agent.report import count


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake told in one line (the command, what is wrong, where help is),
    not after the whole usage (train's runs to 30 lines); exit status 2 as argparse's. No
    abbreviations: a prefix (--total-step) would silently be taken for a flag."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")  # "argument --lr: ..." -> "--lr: ..."
        self.exit(2, f"{self.prog}: {message}; see `{self.prog} --help`\n")

    def unknown(self, extra: list[str]) -> NoReturn:
        """Refuse what the command did not recognise, suggesting the flag closest to it."""
        options = [a for a in extra if a.startswith("-") and a != "-"]
        if not options:
            self.error(f"unexpected argument {extra[0]!r}")
        flag = options[0].split("=", 1)[0]
        known = [s for action in self._actions for s in action.option_strings]
        close = difflib.get_close_matches(flag, known, n=1)
        self.error(f"unknown option {flag}" + (f"; did you mean {close[0]}?" if close else ""))


def _int(text: str) -> int:
    """A flag's whole number: 100000, 100_000 or 1e5."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = 0.5
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number (e.g. 100000, 100_000 or "
                                         f"1e5), got {text!r}")
    return int(value)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number (e.g. 0.25 or 1e-4), "
                                         f"got {text!r}") from None


_TYPES = {int: _int, float: _float, str: str}


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


def _parse_envs(text: str) -> int:
    """--envs: a count, or "auto" (0 in the config: one env per core)."""
    if text == "auto":
        return 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of envs >= 1 or 'auto', "
                                         f"got {text!r}")
    return value


FLAG_NAMES = {"ray.address": "--ray"}
"""Fields whose flag is not --<field-name> (`--ray [ADDRESS]`: alone it means "local")."""


def config_flag(section: str, name: str) -> str:
    """The train flag of config field section.name (docs/config.md shows the same)."""
    return FLAG_NAMES.get(f"{section}.{name}", "--" + name.replace("_", "-"))


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field (--lr, --batch-size, --double-dqn/--no-double-dqn, ...)."""
    defaults = Config()
    seen: dict[str, str] = {}
    for section in SECTIONS:
        obj = getattr(defaults, section)
        docs = field_docs(type(obj))
        group = parser.add_argument_group(f"[{section}] settings (TOML table [{section}])")
        for f in dataclasses.fields(obj):
            flag = config_flag(section, f.name)
            assert flag not in seen, f"{flag} is both {seen[flag]} and {section}.{f.name}"
            seen[flag] = f"{section}.{f.name}"
            default = getattr(obj, f.name)
            kwargs = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS,
                      "help": f"{docs.get(f.name, '')} (default: {default!r})".replace("%",
                                                                                       "%%")}
            if f"{section}.{f.name}" == "run.envs":
                kwargs.update(type=_parse_envs, metavar="N|auto")
            elif f"{section}.{f.name}" == "ray.address":  # --ray alone: a local instance
                kwargs.update(nargs="?", const="local", metavar="ADDRESS")
            elif isinstance(default, bool):
                kwargs["action"] = argparse.BooleanOptionalAction
            elif isinstance(default, tuple):
                kwargs.update(type=_parse_shape, metavar="H,W")
            else:
                kwargs.update(type=_TYPES[type(default)], metavar=type(default).__name__.upper())
            group.add_argument(flag, **kwargs)


def config_overrides(args: argparse.Namespace) -> dict:
    out: dict = {}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            out.setdefault(section, {})[name] = value
    return out


PRESETS = Path(__file__).parent / "presets"


def presets() -> list[str]:
    """The names of the settings files that come with the package (agent/presets/*.toml)."""
    return sorted(p.stem for p in PRESETS.glob("*.toml"))


def _config(args: argparse.Namespace, base: Path | None = None) -> Config:
    overrides = config_overrides(args)
    preset = getattr(args, "preset", None)
    if preset and (base is not None or args.config):
        raise ValueError("--preset picks a settings file: it cannot be combined with "
                         + ("--resume (the run keeps its config.toml)" if base is not None
                            else "--config"))
    if base is not None:
        return load_toml(base, overrides, saved_run=True)
    if args.config or preset:
        return load_toml(args.config or PRESETS / f"{preset}.toml", overrides)
    return from_dict(overrides, source="command line")


# ------------------------------------------------------------------------------ train
TRAIN_EXIT_CODES = {"finished": 0, "interrupted": 130, "halted": 3, "failed": 4}
"""`atari-agent train`'s exit status by the run's end state: 0 finished, 130 interrupted (Ctrl-C /
SIGTERM, saved), 3 halted by the watchdog, 4 failed: a checkpoint could not be written (a full
disk; run.on_save_error), the env gave data that cannot be learned from (a NaN reward), or an env
worker process died or hung (named by env index and pid); the last good checkpoint is intact.
2: refused before training (a bad setting, an unusable checkpoint)."""


def _train(args: argparse.Namespace) -> int:
    from agent.checkpoint import CheckpointError, CheckpointStore
    from agent.learner import resolve_device
    from agent.runs import archive, has_checkpoints, latest_run, lock_run, new_run_dir
    from agent.train import check_resume, train
    from agent.workers import WorkerError

    made = None  # the run directory this command created, while nothing is in it
    run_dir = None
    held = []  # the run directory's lock (runs.lock_run), held while this command trains
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
            held.append(lock_run(run_dir))
            store = CheckpointStore(run_dir)
            resume_from = store.latest()
            if resume_from is None:
                raise ValueError(f"{run_dir} has no checkpoint to resume from")
            config = _config(args, base=run_dir / "config.toml")
            resolve_device(config.learner.device)
            config = check_resume(config, resume_from)  # before anything in the run is written
            done = store.entries[-1]["steps"]
            if done >= config.run.total_steps:  # said, with nothing written or touched
                print(_complete(run_dir, done, config.run.total_steps))
                return 0
            print(f"resuming {run_dir} from {resume_from.name}")
        else:
            config = _config(args)
            resolve_device(config.learner.device)  # refused before a run directory is made
            named = Path(config.run.runs_dir) / config.run.name if config.run.name else None
            if named is not None and named.is_dir():  # claimed before its files are judged
                held.append(lock_run(named))
            if named is not None and has_checkpoints(named):
                if not args.fresh:
                    raise ValueError(
                        f"{named} already has checkpoints: pass --resume {named} to continue "
                        f"it, or --fresh to start new weights there (its files are archived)")
                print(f"--fresh: moved the previous files of {named} to {archive(named)}")
            existed = named is not None and named.exists()
            run_dir = new_run_dir(config.run.runs_dir, config.env.game, config.run.name)
            made = None if existed else run_dir
            if not existed:
                held.append(lock_run(run_dir))
            print(f"run directory: {run_dir}")
        result = train(config, run_dir, resume_from=resume_from)
    except (ValueError, CheckpointError) as exc:
        _remove_if_empty(made)  # a refused start leaves no run directory behind
        print(f"atari-agent train: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C while the first one's save ran: gave up on it
        last = None
        if run_dir is not None and (run_dir / "checkpoints").is_dir():  # (the store makes it)
            last = CheckpointStore(run_dir).latest()
        kept = f"the last checkpoint is {last}" if last else "no checkpoint was saved"
        print(f"atari-agent train: aborted by a second Ctrl-C; {kept}", file=sys.stderr)
        return TRAIN_EXIT_CODES["interrupted"]
    except WorkerError as exc:  # an env worker failed while the envs started or were restored
        print(f"atari-agent train: {str(exc).splitlines()[0]}", file=sys.stderr)
        return TRAIN_EXIT_CODES["failed"]
    if result.state == "failed":
        print(f"atari-agent train: {result.error}", file=sys.stderr)
    else:
        counts = f"{count(result.steps, 'step')}, {count(result.episodes, 'episode')}"
        if result.state == "interrupted":
            print(f"interrupted: {counts}; saved {result.checkpoint}; continue it with "
                  f"`atari-agent train --resume {shlex.quote(str(run_dir))}`")
        else:
            print(f"{result.state}: {counts}; last checkpoint {result.checkpoint}")
    return TRAIN_EXIT_CODES[result.state]


def _complete(run_dir: Path, done: int, total: int) -> str:
    """What `train --resume` says of a run with nothing left to do, and how to extend it."""
    have = (f"{done:,} of {total:,} steps" if done == total
            else f"{done:,} steps, more than its total of {total:,}")
    return (f"{run_dir} is complete: {have}; nothing was changed. To train it further: "
            f"`atari-agent train --resume {shlex.quote(str(run_dir))} --total-steps N` with N "
            f"above {done:,}")


def _remove_if_empty(path: Path | None) -> None:
    """Remove a run directory this command made if nothing but its lock file is in it."""
    from agent.runs import LOCK_NAME

    if path is None:
        return
    if [p.name for p in path.iterdir()] == [LOCK_NAME]:
        (path / LOCK_NAME).unlink()
    try:
        path.rmdir()
    except OSError:  # not empty: the run wrote something there, which stays
        pass


def _runs(args: argparse.Namespace) -> int:
    from agent.runs import runs_table

    print(runs_table(args.runs_dir))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from agent.demo import demo

    try:
        return demo(args.game, args.steps, args.episodes, args.runs_dir, args.json)
    except ValueError as exc:
        print(f"atari-agent demo: {exc}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------ play / evaluate
def _check_flags(args: argparse.Namespace, **ranges) -> None:
    """Refuse out-of-range numeric flags up front, naming the flag and what it accepts."""
    for name, (lo, hi) in ranges.items():
        value = getattr(args, name)
        if value is None or (lo is None or value >= lo) and (hi is None or value <= hi):
            continue
        flag = "--" + name.replace("_", "-")
        accepted = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{flag} must be {accepted}, got {value}")


def _play(args: argparse.Namespace) -> int:
    from agent.checkpoint import CheckpointError
    from agent.play import PlayError, default_video_path, ensure_parent, play
    from agent.policy import load_agent
    from agent.runs import checkpoint_to_play
    from agent.window import has_display

    try:
        _check_flags(args, episodes=(1, None), epsilon=(0.0, 1.0), sticky=(0.0, 1.0),
                     speed=(1e-3, 1e3), scale=(1, 8), max_steps=(1, None),
                     stall_steps=(0, None))
        agent = load_agent(checkpoint_to_play(Path(args.checkpoint)))
        window = args.window if args.window is not None else (
            has_display() and args.video is None and args.gif is None)
        video = args.video
        if not window and video is None and args.gif is None:
            video = ensure_parent(default_video_path(agent))
        print(f"playing {agent.path} ({agent.game}, {agent.steps:,} training steps, "
              f"{agent.layout['kind']} actions), epsilon {args.epsilon}, sticky {args.sticky}")
        play(agent, episodes=args.episodes, seed=args.seed, sticky=args.sticky,
             epsilon=args.epsilon, video=video, gif=args.gif, window=window, speed=args.speed,
             scale=args.scale, max_steps=args.max_steps, stall_steps=args.stall_steps)
    except (ValueError, CheckpointError, PlayError) as exc:
        print(f"atari-agent play: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("atari-agent play: interrupted", file=sys.stderr)
        return 130
    for path, what in ((video, "video"), (args.gif, "gif")):
        if path is not None:
            print(f"{what}: {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from agent import evaluate as ev
    from agent.checkpoint import CheckpointError

    overrides = {"repeat_action_probability": args.sticky, "max_frames": args.max_frames}
    try:
        _check_flags(args, episodes=(1, None), workers=(0, None), epsilon=(0.0, 1.0),
                     sticky=(0.0, 1.0), max_frames=(1, None), worker_timeout=(0.001, None))
        if args.json:
            ev.check_json_path(Path(args.json))
        if args.paths:
            if args.game:
                raise ValueError("--game names the game of a random policy evaluated without "
                                 "checkpoints; a checkpoint already records its game")
            files = [f for p in args.paths for f in ev.checkpoint_files(Path(p))]
            targets = ev.checkpoint_targets(files, overrides)
            envs = list({(t.env.game, t.env.action_set): t.env for t in targets}.values())
            randoms = [ev.random_target(env, overrides) for env in envs]
            if args.policy == "random":
                targets = randoms
            elif args.with_random:
                targets += randoms
        elif args.policy == "random" and args.game:
            env = from_dict({"env": {"game": args.game, "action_set": args.action_set}},
                            source="command line").env
            targets = [ev.random_target(env, overrides)]
        else:
            raise ValueError("give checkpoints or run directories to evaluate (or --policy "
                             "random --game GAME)")
        n = len(targets) * args.episodes
        print(f"evaluating {count(len(targets), 'policy', 'policies')} x "
              f"{count(args.episodes, 'episode')} = {count(n, 'episode')}", file=sys.stderr)
        results = ev.evaluate(targets, args.episodes, args.seed, args.epsilon, args.workers,
                              progress=sys.stderr,
                              worker_timeout=args.worker_timeout or ev.WORKER_TIMEOUT)
    except (ValueError, CheckpointError) as exc:
        print(f"atari-agent evaluate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\natari-agent evaluate: interrupted; nothing written", file=sys.stderr)
        return 130
    print(ev.table(results))
    print(ev.protocol_line(results))
    if args.json:
        try:
            ev.write_json(Path(args.json), results)
        except ValueError as exc:
            print(f"atari-agent evaluate: {exc}", file=sys.stderr)
            return 2
        print(f"json: {args.json}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from agent.plot import PlotError, default_output, plot_runs

    runs = [Path(p) for p in args.run_dirs]
    try:
        out = plot_runs(runs, Path(args.out) if args.out else default_output(runs),
                        width=args.width)
    except PlotError as exc:
        print(f"atari-agent plot: {exc}", file=sys.stderr)
        return 2
    print(f"plot: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    t.add_argument("--preset", choices=presets(),
                   help="a settings file that comes with atari-agent (agent/presets/NAME.toml: "
                   "fast-gpu, for one GPU machine with many cores; fast-cpu, for a CPU "
                   "machine with few cores; demo, the demo's run); flags override it")
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
        description="Train briefly with the settings of agent/presets/demo.toml (a few minutes "
        "on a CPU; `atari-agent train --preset demo` is the same run), save, then score the "
        "trained agent and a random policy under the same evaluation protocol and say whether "
        "the agent clearly beats random (by 3 standard errors of the difference).")
    d.add_argument("--game", default=None, help="the game (default: the preset's)")
    d.add_argument("--steps", type=_int, default=None,
                   help="agent steps of training (default: the preset's run.total_steps)")
    d.add_argument("--episodes", type=_int, default=30, help="evaluation episodes per policy")
    d.add_argument("--json", metavar="FILE", default=None,
                   help="also write the comparison (both policies' scores, the difference, its "
                   "standard error, the verdict) as JSON")
    d.add_argument("--runs-dir", default="runs")
    d.set_defaults(run=_demo)

    eval_eps = Config().explore.eval_epsilon
    p = sub.add_parser(
        "play", help="watch a checkpoint play greedily (window, MP4 or GIF)",
        description="Play CHECKPOINT (or a run directory's best.pt, else its latest) greedily on "
        "its game and action set. With a display: a live window (space pause, n step, +/- "
        "speed, q quit). Without one, or with --video/--gif: a recording with an overlay of "
        "score, lives, frame, the chosen action and every action's Q-value.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file or a run directory")
    p.add_argument("--episodes", type=_int, default=1)
    p.add_argument("--seed", type=_int, default=0, help="episode i plays the game an "
                   "evaluation with this seed scores as its episode i")
    p.add_argument("--sticky", type=_float, default=0.25, help="sticky-action probability")
    p.add_argument("--epsilon", type=_float, default=0.0, help="share of random actions (0: "
                   "the greedy policy; evaluation's protocol uses 0.001)")
    p.add_argument("--video", type=Path, metavar="OUT.mp4",
                   help="record an MP4 (default without a display: RUN/videos/<ckpt>.mp4)")
    p.add_argument("--gif", type=Path, metavar="OUT.gif", help="also record a GIF")
    p.add_argument("--window", action=argparse.BooleanOptionalAction, default=None,
                   help="show a live window (default: when a display is present and nothing "
                   "is recorded)")
    p.add_argument("--speed", type=_float, default=1.0, help="1.0 = the game's real speed")
    p.add_argument("--scale", type=_int, default=3, help="screen magnification")
    p.add_argument("--max-steps", type=_int, default=None, metavar="N",
                   help="stop each episode after N agent steps")
    p.add_argument("--stall-steps", type=_int, default=None, metavar="N",
                   help="stop an episode after N agent steps with no reward and no life lost "
                   "(a policy that never serves the ball would otherwise play on to the "
                   "108,000-frame cap, 30 game-minutes); 0 plays on to the cap. Default: 5 "
                   "game-minutes, i.e. 18,000 emulator frames / frameskip (4,500 agent steps "
                   "at frameskip 4)")
    p.set_defaults(run=_play)

    e = sub.add_parser(
        "evaluate", help="score checkpoints under the evaluation protocol (table, JSON)",
        description="Score checkpoints (or every checkpoint of run directories) over N episodes "
        "each in parallel workers: sticky actions 0.25, game over ends an episode, raw score, "
        f"108,000-frame cap, up to 30 no-op frames, epsilon {eval_eps}. Deterministic for a "
        "seed. Prints a table (best first, human-normalised where references exist).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("paths", nargs="*", metavar="CHECKPOINT|RUN_DIR")
    e.add_argument("--episodes", type=_int, default=30, help="episodes per policy")
    e.add_argument("--seed", type=_int, default=0)
    e.add_argument("--workers", type=_int, default=0, help="processes (0: one per CPU)")
    e.add_argument("--worker-timeout", type=_float, default=None, metavar="SECONDS",
                   help="stop when one episode takes this long: a hung worker (default: "
                   "agent.evaluate.WORKER_TIMEOUT, 600)")
    e.add_argument("--epsilon", type=_float, default=eval_eps,
                   help="evaluation epsilon (distinct from training's)")
    e.add_argument("--sticky", type=_float, default=0.25, help="sticky-action probability")
    e.add_argument("--max-frames", type=_int, default=108_000,
                   help="emulator frames before an episode is truncated")
    e.add_argument("--policy", choices=("greedy", "random"), default="greedy",
                   help="random: a uniformly random policy on the same game, actions, protocol")
    e.add_argument("--with-random", action="store_true",
                   help="add the random policy's row for each game to the table")
    e.add_argument("--game", help="with --policy random and no checkpoints: the game")
    e.add_argument("--action-set", choices=("documented", "minimal"), default="documented",
                   help="with --game: the random policy's action set")
    e.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    e.set_defaults(run=_evaluate)

    pl = sub.add_parser(
        "plot", help="PNG learning curves of runs",
        description="Learning curves from RUN_DIR/metrics.jsonl: score, loss, Agree%, "
        "Q-range, GradNorm, ClipΔ and the greedy button distribution, several runs overlaid.")
    pl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    pl.add_argument("--out", metavar="FILE.png",
                    help="default: RUN_DIR/curves.png for one run, ./curves.png for several")
    pl.add_argument("--width", type=_int, default=1600, help="image width in pixels")
    pl.set_defaults(run=_plot)
    parser.commands = sub.choices
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # `atari-agent` alone: the commands, not an error about a missing one
        parser.print_help(sys.stderr)
        return 2
    # Parsed as known args so that the command whose flag is unknown says so (argparse would
    # have the top-level parser say it, with the top-level usage).
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.commands[args.command].unknown(extra)
    try:
        if args.command in ("train", "play", "evaluate", "demo"):
            with sigint.deferred():  # torch is a C++ module: a Ctrl-C inside its init aborts
                import torch  # noqa: F401

                from agent.env import UnsupportedALE, check_ale_version
            try:
                check_ale_version()
            except UnsupportedALE as exc:
                print(f"atari-agent {args.command}: {exc}", file=sys.stderr)
                return 2
        return args.run(args)
    except KeyboardInterrupt:  # during a command's imports (torch: about a second) or set-up
        print(f"\natari-agent {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
