"""`atari-agent evaluate`: checkpoints (or a random policy) scored under the evaluation protocol
of agent/protocol.py, spread over worker processes, reported as a ranked table and as JSON. The
demo's trained-vs-random comparison uses it too; the training loop does not (it plays its
periodic evaluation in-process through agent/protocol.py).

`evaluate` spreads (checkpoint, episode) tasks over worker processes: ale-py holds the GIL, so
only processes run emulators in parallel. Each worker acts with one torch thread. Episode i of
a run seeded s is the same game wherever it runs, so results do not depend on the worker count.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

from agent import files, sigint
from agent.checkpoint import CheckpointStore
from agent.config import EnvConfig, from_dict
from agent.diagnostics import format_buttons
from agent.outputs import check_output
from agent.protocol import Episode, episode_streams, play_episode, protocol_config, summarize
from agent.references import human_normalized
from agent.runs import checkpoints_dir


class EvaluateError(ValueError):
    """Bad input to an evaluation (no checkpoints, a dead worker, ...); the message says which."""


# ------------------------------------------------------------------------------ what to score
@dataclass
class Target:
    """One row of the table: a checkpoint's greedy agent, or a random policy, on one env."""

    label: str
    game: str
    env: EnvConfig
    """The protocol's env config for this row."""
    checkpoint: Path | None = None
    """None: a uniformly random policy."""
    steps: int | None = None
    """Training steps behind the checkpoint."""

    @property
    def policy(self) -> str:
        return "random" if self.checkpoint is None else "greedy"


def checkpoint_files(path: Path) -> list[Path]:
    """A checkpoint file as given, or every checkpoint of a run directory (oldest first; best.pt
    only when it is not a copy of a kept periodic checkpoint)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise EvaluateError(f"{path} does not exist (expected a checkpoint file or a run "
                            f"directory)")
    if not path.is_dir():
        raise EvaluateError(f"{path} is not a checkpoint file or a run directory")
    ckpt_dir = checkpoints_dir(path)
    periodic = sorted(ckpt_dir.glob("ckpt-*.pt"))
    files = list(periodic)
    best = ckpt_dir / "best.pt"
    if best.is_file():
        store = CheckpointStore(ckpt_dir.parent)
        best_steps = (store.index.get("best") or {}).get("steps")
        if best_steps is None or best_steps not in {e["steps"] for e in store.entries}:
            files.append(best)
    if not files:
        raise EvaluateError(f"{path} has no checkpoints yet (no {ckpt_dir}/ckpt-*.pt or "
                            f"best.pt); a run writes one every run.checkpoint_every steps")
    return files


def checkpoint_targets(paths: list[Path], overrides: dict) -> list[Target]:
    """Load each checkpoint's header (fails fast on a bad file, before any worker starts)."""
    from agent.policy import load_agent

    targets = []
    for path in paths:
        agent = load_agent(path)
        targets.append(Target(_label(path), agent.game, protocol_config(agent.config.env,
                                                                         **overrides),
                              checkpoint=path, steps=agent.steps))
    return targets


def random_target(env: EnvConfig, overrides: dict) -> Target:
    return Target(f"random ({env.action_set} actions)", env.game,
                  protocol_config(env, **overrides))


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------ workers
_AGENTS: dict[str, object] = {}
"""Per-process cache of loaded checkpoints (a worker plays many episodes of each)."""


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one emulator and one torch thread per worker: no oversubscription
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def _episode_task(checkpoint: str | None, env: dict, seed: int, index: int,
                  epsilon: float) -> tuple[int, Episode]:
    """Worker side: play episode `index` of one target (loads and caches its checkpoint)."""
    from agent.env import AtariEnv

    act = None
    if checkpoint is not None:
        agent = _AGENTS.get(checkpoint)
        if agent is None:
            from agent.policy import load_agent

            agent = _AGENTS[checkpoint] = load_agent(checkpoint)
        act = agent.act
    env_seed, rng = episode_streams(seed, index)
    env_config = from_dict({"env": env}, source="evaluation task").env
    game = AtariEnv(env_config, env_seed)
    try:
        if checkpoint is not None:
            agent.check_actions(game.actions)
        return index, play_episode(game, act, rng, epsilon)
    finally:
        game.close()


def _env_dict(env: EnvConfig) -> dict:
    out = asdict(env)
    out["frame_shape"] = list(env.frame_shape)
    return out


@dataclass
class Progress:
    """Counts finished episodes and reports them through `out` (None: silent).

    On a terminal, a counter redrawn in place. Elsewhere (a log file, a pipe, CI) a plain line
    every `every` seconds and one at the end, so a long evaluation shows it is alive without
    filling the log with a line per episode.
    """

    total: int
    out: object = None
    done: int = 0
    every: float = 10.0
    """Seconds between the plain lines written when `out` is not a terminal."""
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._tty = self.out is not None and self.out.isatty()
        self._start = self._last = self.clock()

    def tick(self) -> None:
        self.done += 1
        if self.out is None:
            return
        if self._tty:
            end = "\n" if self.done == self.total else ""
            print(f"\r  {self.done}/{self.total} episodes", end=end, file=self.out, flush=True)
            return
        now = self.clock()
        if self.done == self.total or now - self._last >= self.every:
            self._last = now
            print(f"  {self.done}/{self.total} episodes ({100 * self.done // self.total}%), "
                  f"{now - self._start:.0f} s", file=self.out, flush=True)


WORKER_TIMEOUT = 600.0
"""Seconds one episode may take before its worker counts as hung. An episode is capped at
108,000 emulator frames, well under a minute of one core here, so ten minutes is far beyond a
slow one."""


def evaluate(targets: list[Target], episodes: int = 30, seed: int = 0, epsilon: float = 0.001,
             workers: int = 0, progress=None,
             worker_timeout: float = WORKER_TIMEOUT) -> list[dict]:
    """Score every target over `episodes` episodes; one result dict per target (input order).

    workers: processes to spread episodes over (0: one per CPU, at most one per task; 1: play
    in this process). Results do not depend on it. A worker that dies, or an episode that takes
    longer than `worker_timeout` seconds (a hung worker), stops the evaluation (EvaluateError).
    """
    if episodes < 1:
        raise EvaluateError(f"episodes must be >= 1, got {episodes}")
    if not 0.0 <= epsilon <= 1.0:
        raise EvaluateError(f"epsilon must be in [0, 1], got {epsilon}")
    if workers < 0:
        raise EvaluateError(f"workers must be >= 0 (0: one per CPU), got {workers}")
    if not worker_timeout > 0:
        raise EvaluateError(f"worker_timeout must be > 0 seconds, got {worker_timeout}")
    tasks = [(t, str(target.checkpoint) if target.checkpoint is not None else None,
              _env_dict(target.env), seed, i, epsilon)
             for t, target in enumerate(targets) for i in range(episodes)]
    workers = workers or min(os.cpu_count() or 1, len(tasks))
    done: list[dict[int, Episode]] = [{} for _ in targets]
    meter = Progress(len(tasks), progress)
    if workers <= 1:
        for t, *args in tasks:
            index, episode = _episode_task(*args)
            done[t][index] = episode
            meter.tick()
    else:
        _run_pool(tasks, workers, done, meter, worker_timeout)
    return [_result(target, [done[t][i] for i in range(episodes)], seed, epsilon)
            for t, target in enumerate(targets)]


def _run_pool(tasks: list, workers: int, done: list[dict[int, Episode]], meter: Progress,
              timeout: float) -> None:
    """Play `tasks` in `workers` processes, at most one task in flight per worker, so that a
    task's submission time is its start time and a hung worker shows as an overdue task."""
    pool = ProcessPoolExecutor(workers, mp_context=get_context("forkserver"),
                               initializer=_init_worker)
    pending: dict[Future, tuple[int, int, float]] = {}  # -> (target, episode, submitted at)
    queue = iter(tasks)
    finished_all = False
    try:
        while True:
            while len(pending) < workers and (task := next(queue, None)) is not None:
                t, *args = task
                with sigint.deferred():  # a submit may start a worker: let it be registered
                    pending[pool.submit(_episode_task, *args)] = (t, args[3], time.monotonic())
            if not pending:
                break
            oldest = min(started for _, _, started in pending.values())
            finished, _ = wait(pending, timeout=max(oldest + timeout - time.monotonic(), 0),
                               return_when=FIRST_COMPLETED)
            for future in finished:
                t = pending.pop(future)[0]
                index, episode = future.result()
                done[t][index] = episode
                meter.tick()
            overdue = [(t, i) for t, i, started in pending.values()
                       if time.monotonic() - started > timeout]
            if overdue and not finished:
                pids = sorted(getattr(pool, "_processes", {}))
                raise EvaluateError(
                    f"evaluation episode {overdue[0][1]} has not finished in {timeout:g} s: a "
                    f"worker is hung (worker pids {pids}); they were stopped and no results "
                    f"were kept (--worker-timeout sets the limit)")
        finished_all = True
    except BrokenProcessPool as exc:
        raise EvaluateError(f"an evaluation worker died ({exc}); no results were kept") from None
    finally:
        for future in pending:
            future.cancel()
        workers_ = list(getattr(pool, "_processes", {}).values())
        manager = getattr(pool, "_executor_manager_thread", None)
        # Interrupted, failed or hung (also during the first submit, which starts a worker
        # before anything is pending): stop the workers we started, by pid. A worker left
        # starting would find the pool's semaphores gone and print a traceback.
        if not finished_all:
            # SIGKILL, not SIGTERM: a stopped or wedged worker never handles a SIGTERM, and
            # an unfinished episode has nothing worth saving.
            for process in workers_:
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        # The manager thread joins the workers itself: let it finish first. Two threads that
        # reap one forkserver worker race for its exit status, and the loser reads it as 255.
        if manager is not None:
            manager.join(timeout=10)
        for process in workers_:  # an idle worker that is wedged would block shutdown forever
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
        # The pool's manager thread must be gone before the interpreter exits: Python 3.11's
        # exit hook writes to its wake-up pipe while the thread closes it (after a Ctrl-C this
        # printed "OSError: Bad file descriptor" and a traceback). With no worker alive it ends.
        if manager is not None:
            manager.join(timeout=10)


def _result(target: Target, episodes: list[Episode], seed: int, epsilon: float) -> dict:
    summary = summarize(episodes)
    env = target.env
    return {
        "checkpoint": None if target.checkpoint is None else str(target.checkpoint),
        "label": target.label,
        "policy": target.policy,
        "game": target.game,
        "training_steps": target.steps,
        **summary,
        "hns": human_normalized(target.game, summary["mean"]),
        "truncated": sum(e.truncated for e in episodes),
        "scores": [e.score for e in episodes],
        "lengths": [e.length for e in episodes],
        "protocol": {"repeat_action_probability": env.repeat_action_probability,
                     "terminal_on_life_loss": env.terminal_on_life_loss,
                     "max_frames": env.max_frames, "noop_max": env.noop_max,
                     "frameskip": env.frameskip, "action_set": env.action_set,
                     "epsilon": 1.0 if target.checkpoint is None else epsilon,
                     "score": "raw game score (unclipped)", "seed": seed},
    }


# ------------------------------------------------------------------------------ reporting
def ranked(results: list[dict]) -> list[dict]:
    """Best first within each game (games in order of first appearance)."""
    order = {g: i for i, g in reversed(list(enumerate(r["game"] for r in results)))}
    return sorted(results, key=lambda r: (order[r["game"]], -r["mean"]))


def table(results: list[dict]) -> str:
    # "episodes" in full: "eps" reads as epsilon, which the protocol line reports
    rows = [("#", "policy", "game", "steps", "episodes", "mean ± std", "median", "min", "max",
             "length", "HNS %", "buttons n/Z/F/FZ %")]
    for i, r in enumerate(ranked(results), 1):
        rows.append((str(i), r["label"], r["game"],
                     "-" if r["training_steps"] is None else f"{r['training_steps']:,}",
                     str(r["episodes"]), f"{r['mean']:,.1f} ± {r['std']:,.1f}",
                     f"{r['median']:,.1f}", f"{r['min']:,.0f}", f"{r['max']:,.0f}",
                     f"{r['mean_length']:,.0f}", "-" if r["hns"] is None else f"{r['hns']:.1f}",
                     format_buttons(r.get("buttons"))))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    left = {1, 2}
    lines = ["  ".join(cell.ljust(w) if c in left else cell.rjust(w)
                       for c, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def protocol_line(results: list[dict]) -> str:
    """The protocol under the table; the random policy's epsilon (1.0) only when one ran."""
    p = results[0]["protocol"]
    greedy = sorted({r["protocol"]["epsilon"] for r in results if r["policy"] == "greedy"})
    has_random = any(r["policy"] == "random" for r in results)
    if greedy:
        epsilon = f"epsilon {', '.join(map(str, greedy))}"
        epsilon += " (random policy: 1.0)" if has_random else ""
    else:
        epsilon = "epsilon 1.0 (random policy)"
    return (f"protocol: sticky actions {p['repeat_action_probability']}, game over ends an "
            f"episode, raw score, {p['max_frames']:,}-frame cap, up to {p['noop_max']} no-op "
            f"frames, {epsilon}, seed {p['seed']}; "
            f"HNS = (score - random) / (human - random) x 100")


def check_json_path(path: Path) -> Path:
    """Refuse an output path that cannot be written, before any episode is played."""
    return check_output(path, None, "--json", EvaluateError)


def write_json(path: Path, results: list[dict]) -> None:
    data = json.dumps(ranked(results), indent=2).encode()
    files.atomic_write(path, lambda f: f.write(data + b"\n"), error=EvaluateError)
