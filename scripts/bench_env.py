"""Benchmark environment throughput: agent steps/s of our envs against raw ALE and the libraries.

Run from the repository root (the `agent` package must be built and installed):

    python scripts/bench_env.py                        # full run: ~1.5 min (5 x 2.5 s a row)
    python scripts/bench_env.py --quick                # smoke run: ~10 s
    python scripts/bench_env.py --game breakout        # another game (ALE ROM id, snake_case)
    python scripts/bench_env.py --json bench.json      # also write the numbers as JSON
    python scripts/bench_env.py --seconds 4 --repeats 7

What it measures, in one run on this machine: agent steps per second, one agent step
being frameskip 4 emulator frames with sticky actions (repeat_action_probability 0.25), for the
same game, driven by random actions from a seeded generator, every episode reset when it ends:

(a) raw ALE, the limit: ``ale_py.ALEInterface`` with the minimal action set, four ``act()``
    calls per agent step, ``reset_game()`` on game over; no screen is read, nothing is
    preprocessed or stacked. Also, for context (no target), the same loop in two processes at
    once (this script re-run with a hidden ``--child raw INDEX``), summed: what the machine
    gives two parallel emulators right now, the ceiling for (d) and (e) with two envs. On a
    shared machine it can be far below 2x one.
(b) our single environment, ``agent.env.AtariEnv``: the same four frames, the max of the last
    two through the native kernel, 84x84 gray, the 4-stack kept by the env; ``reset()`` when an
    episode terminates or is truncated.
(c) gymnasium: ``ALE/<Game>-v5`` with frameskip 1, in ``AtariPreprocessing`` (frame_skip 4,
    84x84, gray, noop_max 30) and ``FrameStackObservation(4)``.
(d) ale_py's C++ vector env, ``ale_py.vector_env.AtariVectorEnv`` (84x84 gray, stack 4,
    frameskip 4, max-pooled, synchronous: batch_size = num_envs, one thread per env), with one
    and with two envs; it resets finished episodes itself.
(e) our pool, ``agent.workers.VecEnv`` with two envs (resets finished episodes itself), at its
    default setting: env 0 stepped in this process, env 1 in a worker process. Also, for context
    (no target), the same pool with every env in a worker (``inline_first=False``: two workers,
    this process only sends the actions and waits).

A vector step counts num_envs agent steps. Each row runs for a fixed wall time per repeat;
steps/s is the median over the repeats, taken after a warm-up, with the garbage collector off
while timing. The repeats of the rows are interleaved (a, a2, b, c, d1, d2, e, e2, a, ...) so that a
slow patch of a noisy, shared machine hits them alike; every env stays open for the whole run (an
idle ``AtariVectorEnv`` or worker pool waits without using a core). A row that cannot be built or
run (e.g. ``agent.workers`` not importable) is reported as n/a with the reason, and the ratios
that need it are null.

Also, for context: what each part of a (b) step costs (best of 5, per call), and what two envs in
lock step lose against twice one env (from (b)'s steps timed one by one: the slower of two steps,
and a reset that stalls the other env; see lock_step()).

Targets: (b) >= 0.9x (a); (b) >= 2x (c); (e) >= 1.8x (b); (e) >= (d) with two envs. The
column "this process's CPU" (CPU seconds of the benchmark process per wall second) and the load
average show when other load shared the cores.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import benchio
import numpy as np
from benchio import (
    describe_load,
    describe_machine,
    emit,
    fmt_int,
    fmt_ratio,
    loadavg,
    progress_log,
    ratio,
    table,
    targets_table,
    usable_cpus,
)

SEED = 0
FRAMESKIP = 4
STICKY = 0.25
NOOP_MAX = 30
SCREEN_SIZE = 84
STACK = 4
ACTION_BLOCK = 1 << 14  # pre-drawn random actions per row, cycled

# Targets (see module docstring).
TARGET_SINGLE_VS_RAW = 0.9
TARGET_SINGLE_VS_GYMNASIUM = 2.0
TARGET_WORKERS2_VS_SINGLE = 1.8
TARGET_WORKERS2_VS_ATARIVECTORENV = 1.0


# ------------------------------------------------------------------------------------ rows
@dataclass
class Row:
    """One contender: `step()` does one (vector) step of `num_envs` agent steps, or `run()`."""

    key: str
    name: str
    num_envs: int = 1
    actions: int | None = None
    """Size of the action set the random actions are drawn from."""
    step: Callable[[], None] | None = None
    run: Callable[[float], float] | None = None
    """Instead of `step`: run for the given seconds, return agent steps/s (rows timed elsewhere)."""
    close: Callable[[], None] = lambda: None
    error: str | None = None
    """Why the row could not be measured (it is then n/a)."""
    detail: str | None = None
    """The exception behind `error`, where `error` summarises it."""
    steps_per_s: list[float] = field(default_factory=list)
    cpu_per_wall: list[float] = field(default_factory=list)
    """CPU seconds of this process (all its threads, not worker processes) per wall second."""


def action_stream(
    n_actions: int, num_envs: int | None = None, seed: int = SEED
) -> Callable[[], object]:
    """A cycled stream of seeded random actions: ints, or int64 arrays of num_envs."""
    rng = np.random.default_rng(seed)
    if num_envs is None:
        block = rng.integers(0, n_actions, ACTION_BLOCK).tolist()
    else:
        block = list(rng.integers(0, n_actions, (ACTION_BLOCK, num_envs), dtype=np.int64))
    i = -1

    def next_action():
        nonlocal i
        i = (i + 1) % ACTION_BLOCK
        return block[i]

    return next_action


def gym_id(game: str) -> str:
    """ALE ROM id (snake_case) -> gymnasium id: "space_invaders" -> "ALE/SpaceInvaders-v5"."""
    return "ALE/" + "".join(part.capitalize() for part in game.split("_")) + "-v5"


def make_raw(row: Row, game: str, seed: int = SEED) -> None:
    import ale_py

    from agent.games import rom_path

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", STICKY)
    ale.loadROM(str(rom_path(game)))  # the ROM our env loads
    actions = ale.getMinimalActionSet()
    next_action = action_stream(len(actions), seed=seed)
    act, game_over, reset_game = ale.act, ale.game_over, ale.reset_game

    def step() -> None:
        a = actions[next_action()]
        for _ in range(FRAMESKIP):
            act(a)
        if game_over():
            reset_game()

    row.actions, row.step = len(actions), step


def child_loop(game: str, kind: str, index: int) -> int:
    """`--child KIND INDEX`: loop (a) ("raw") or (b) ("single") with seed SEED + INDEX, for the
    seconds read from stdin.

    Prints "ready <actions>" once the ROM is loaded, then answers each line of stdin (seconds
    to run) with "<calls> <elapsed seconds>"; exits at end of input.
    """
    if kind not in CHILD_LOOPS:
        raise SystemExit(f"--child KIND must be one of {', '.join(CHILD_LOOPS)}, got {kind!r}")
    row = Row(kind, "")
    CHILD_LOOPS[kind](row, game, seed=SEED + index)
    print("ready", row.actions, flush=True)
    for line in sys.stdin:
        calls, elapsed = run_for(row.step, float(line))
        print(calls, elapsed, flush=True)
    return 0


def make_processes(row: Row, game: str, kind: str = "raw") -> None:
    """Loop (a) ("raw") or (b) ("single") in `num_envs` processes at once, each on its own
    (nothing shared, nothing waited for): what this machine gives parallel emulators."""
    import subprocess

    cmd = [sys.executable, os.path.abspath(__file__), "--game", game, "--child", kind]
    procs: list[subprocess.Popen] = []

    def close() -> None:
        for p in procs:
            try:
                p.stdin.close()
                p.wait(timeout=10)
            except Exception:  # not answering: end it (only the processes started here)
                p.kill()
                p.wait()

    row.close = close
    for i in range(row.num_envs):
        procs.append(subprocess.Popen(
            [*cmd, str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ))
    for p in procs:
        answer = p.stdout.readline().split()
        if len(answer) != 2 or answer[0] != "ready":
            raise RuntimeError(f"{kind} loop process (pid {p.pid}) did not start (see stderr)")
        row.actions = int(answer[1])

    def run(seconds: float) -> float:
        for p in procs:  # all start at once
            p.stdin.write(f"{seconds!r}\n")
            p.stdin.flush()
        rate = 0.0
        for p in procs:
            answer = p.stdout.readline().split()
            if len(answer) != 2:
                raise RuntimeError(f"{kind} loop process (pid {p.pid}) stopped answering")
            rate += int(answer[0]) / float(answer[1])
        return rate

    row.run = run


def make_single(row: Row, game: str, seed: int = SEED) -> None:
    from agent.config import EnvConfig
    from agent.env import AtariEnv

    env = AtariEnv(EnvConfig(game=game), seed=seed)
    row.close = env.close
    env.reset()
    next_action = action_stream(len(env.actions), seed=seed)
    env_step, env_reset = env.step, env.reset

    def step() -> None:
        s = env_step(next_action())
        if s.terminated or s.truncated:
            env_reset()

    row.actions, row.step = len(env.actions), step


CHILD_LOOPS = {"raw": make_raw, "single": make_single}  # what make_processes() can run


def make_gymnasium(row: Row, game: str) -> None:
    import ale_py
    import gymnasium
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    gymnasium.register_envs(ale_py)
    env = gymnasium.make(gym_id(game), frameskip=1, repeat_action_probability=STICKY)
    env = AtariPreprocessing(
        env, noop_max=NOOP_MAX, frame_skip=FRAMESKIP, screen_size=SCREEN_SIZE, grayscale_obs=True
    )
    env = FrameStackObservation(env, STACK)
    row.close = env.close
    env.reset(seed=SEED)
    next_action = action_stream(int(env.action_space.n))
    env_step, env_reset = env.step, env.reset

    def step() -> None:
        _, _, terminated, truncated, _ = env_step(next_action())
        if terminated or truncated:
            env_reset()

    row.actions, row.step = int(env.action_space.n), step


def make_atarivectorenv(row: Row, game: str) -> None:
    from ale_py.vector_env import AtariVectorEnv

    env = AtariVectorEnv(
        game,
        row.num_envs,
        batch_size=0,  # synchronous: every env steps on every call
        num_threads=row.num_envs,
        repeat_action_probability=STICKY,
        img_height=SCREEN_SIZE,
        img_width=SCREEN_SIZE,
        grayscale=True,
        stack_num=STACK,
        frameskip=FRAMESKIP,
        maxpool=True,
        noop_max=NOOP_MAX,
    )
    row.close = env.close
    env.reset(seed=SEED)
    n = int(env.single_action_space.n)
    next_action = action_stream(n, row.num_envs)
    env_step = env.step

    def step() -> None:
        env_step(next_action())

    row.actions, row.step = n, step


def make_workers(row: Row, game: str, inline_first: bool | None = None) -> None:
    """(e): None builds the pool at its default setting, True/False sets ``inline_first``."""
    from agent import workers  # (not `from agent.workers import`: sorts alike with or without it)
    from agent.config import EnvConfig

    options = {} if inline_first is None else {"inline_first": inline_first}
    env = workers.VecEnv(EnvConfig(game=game), num_envs=row.num_envs, seed=SEED, **options)
    row.close = env.close
    env.reset()
    next_action = action_stream(len(env.actions), row.num_envs)
    env_step = env.step

    def step() -> None:
        env_step(next_action())

    row.actions, row.step = len(env.actions), step


def build_rows(game: str, skip: set[str], log: Callable[[str], None]) -> list[Row]:
    specs = [
        (Row("raw_ale", "(a) raw ALE act loop, no preprocessing"), make_raw),
        (Row("raw_ale_2proc", "(a) raw ALE act loop, 2 processes: the machine's parallel limit",
             num_envs=2), make_processes),
        (Row("single", "(b) agent.env.AtariEnv"), make_single),
        (Row("gymnasium", "(c) gymnasium AtariPreprocessing + FrameStack"), make_gymnasium),
        (Row("atarivectorenv_1", "(d) ale_py AtariVectorEnv, 1 env"), make_atarivectorenv),
        (Row("atarivectorenv_2", "(d) ale_py AtariVectorEnv, 2 envs", num_envs=2),
         make_atarivectorenv),
        (Row("workers_2", "(e) agent.workers.VecEnv, 2 envs", num_envs=2), make_workers),
        (Row("workers_2_all_in_workers", "(e) agent.workers.VecEnv, 2 envs, every env in a "
             "worker (inline_first=False)", num_envs=2),
         lambda row, game: make_workers(row, game, inline_first=False)),
    ]
    return open_rows(specs, game, skip, log)


def open_rows(specs: list, game: str, skip: set[str], log: Callable[[str], None]) -> list[Row]:
    """Build each (Row, make) of `specs`; a row that cannot be built is kept as n/a."""
    rows = []
    for row, make in specs:
        if row.key in skip:
            row.error = "skipped (--skip)"
        else:
            log(f"opening {row.key}")
            try:
                make(row, game)
            except Exception as exc:  # the row is reported as n/a
                traceback.print_exc(file=sys.stderr)
                row.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
                if row.key.startswith("workers") and isinstance(exc, ImportError):
                    row.detail, row.error = row.error, "agent.workers unavailable"
                close_quietly(row)
        rows.append(row)
    return rows


def close_quietly(row: Row) -> None:
    try:
        row.close()
    except Exception:  # a failed close must not hide the results
        traceback.print_exc(file=sys.stderr)
    row.close = lambda: None


# ---------------------------------------------------------------------------------- timing
def run_for(step: Callable[[], None], seconds: float) -> tuple[int, float]:
    """Call `step` until `seconds` of wall time have passed; returns (calls, elapsed seconds)."""
    clock = time.perf_counter
    start = clock()
    end = start + seconds
    calls = 0
    now = start
    while now < end:
        step()
        calls += 1
        now = clock()
    return calls, now - start


def measure(rows: list[Row], seconds: float, repeats: int, warmup: float, log) -> None:
    """Interleaved repeats of every live row; a row that fails mid-run becomes n/a."""
    live = [r for r in rows if r.error is None]
    for row in live:
        try:
            row.run(warmup) if row.run is not None else run_for(row.step, warmup)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            row.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for rep in range(repeats):
            log(f"repeat {rep + 1}/{repeats}")
            for row in rows:
                if row.error is not None:
                    continue
                try:
                    cpu, start = time.process_time(), time.perf_counter()
                    if row.run is not None:
                        rate = row.run(seconds)
                    else:
                        calls, elapsed = run_for(row.step, seconds)
                        rate = calls * row.num_envs / elapsed
                    cpu = (time.process_time() - cpu) / (time.perf_counter() - start)
                except Exception as exc:
                    traceback.print_exc(file=sys.stderr)
                    row.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
                    continue
                row.steps_per_s.append(rate)
                row.cpu_per_wall.append(cpu)
    finally:
        if gc_was_enabled:
            gc.enable()


# ---------------------------------------------------------------------------------- report
def row_result(row: Row) -> dict:
    """A measured row as it goes into the JSON (and the table)."""
    mid = median(row)
    return dict(
        key=row.key,
        name=row.name,
        num_envs=row.num_envs,
        actions=row.actions,
        steps_per_s=mid,
        min=min(row.steps_per_s) if mid is not None else None,
        max=max(row.steps_per_s) if mid is not None else None,
        steps_per_s_per_repeat=[round(x, 1) for x in row.steps_per_s],
        process_cpu_per_wall=statistics.median(row.cpu_per_wall) if mid is not None else None,
        error=row.error,
        error_detail=row.detail,
    )


def median(row: Row) -> float | None:
    if row.error is not None or not row.steps_per_s:
        return None
    return statistics.median(row.steps_per_s)


def targets(res: dict) -> list[dict]:
    r = res["ratios"]
    specs = [
        ("single_vs_raw", f"(b) single env >= {TARGET_SINGLE_VS_RAW:g}x (a) raw ALE",
         TARGET_SINGLE_VS_RAW),
        ("single_vs_gymnasium", f"(b) single env >= {TARGET_SINGLE_VS_GYMNASIUM:g}x (c) gymnasium",
         TARGET_SINGLE_VS_GYMNASIUM),
        ("workers2_vs_single",
         f"(e) VecEnv, 2 envs >= {TARGET_WORKERS2_VS_SINGLE:g}x (b) single env",
         TARGET_WORKERS2_VS_SINGLE),
        ("workers2_vs_atarivectorenv", "(e) VecEnv, 2 envs >= (d) AtariVectorEnv, 2 envs",
         TARGET_WORKERS2_VS_ATARIVECTORENV),
    ]
    out = []
    for key, text, threshold in specs:
        value = r[key]
        out.append(
            dict(
                key=key,
                target=text,
                threshold=threshold,
                value=value,
                measured="n/a" if value is None else f"{value:.2f}x",
                met=None if value is None else value >= threshold,
            )
        )
    return out


def render(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"Machine: {describe_machine(m)}, frame kernel `{m['frame_kernel']}`; Python "
        f"{m['python']}, numpy {m['numpy']}, ale-py {m['ale_py']}, gymnasium {m['gymnasium']}; "
        f"{describe_load(m)}.",
        f"Game `{res['game']}`, frameskip {FRAMESKIP}, sticky actions {STICKY:g}, "
        f"{SCREEN_SIZE}x{SCREEN_SIZE} gray, stack {STACK}; random actions (seed {SEED}). "
        f"Median of {res['repeats']} interleaved repeats of {res['seconds_per_repeat']:g} s each "
        f"after {res['warmup_s']:g} s of warm-up.",
        "",
    ]
    single = res["steps_per_s"]["single"]
    rows = []
    for row in res["rows"]:
        sps = row["steps_per_s"]
        if sps is None:
            cells = [f"n/a ({row['error']})", "-", "-", "-"]
        else:
            cells = [fmt_int(sps), f"{fmt_int(row['min'])} - {fmt_int(row['max'])}",
                     fmt_ratio(ratio(sps, single)), f"{row['process_cpu_per_wall']:.2f}"]
        actions = "-" if row["actions"] is None else row["actions"]
        rows.append([row["name"], row["num_envs"], actions, *cells])
    lines += table(("Environment", "envs", "actions", "agent steps/s", "min - max",
                    "vs (b) single env", "this process's CPU"), rows)

    lines += [
        "",
        "This process's CPU: CPU seconds of the benchmark process (all its threads, not worker "
        "processes) per wall second, median; under 1 for a single-threaded row means other load "
        "took the core away (a VM's steal time does not show here).",
    ]
    r = res["ratios"]
    if r["raw2proc_vs_raw"] is not None:
        lines += [
            "",
            f"Parallel limit: two raw ALE processes together run {r['raw2proc_vs_raw']:.2f}x one "
            "(2.00x on two free cores)"
            + (
                ""
                if r["workers2_vs_raw2proc"] is None
                else f"; (e) VecEnv (2 envs) reaches {r['workers2_vs_raw2proc']:.0%} of it, "
                f"2x the single env would be {r['single_x2_vs_raw2proc']:.0%}"
            )
            + ".",
        ]
    if res.get("components_us"):
        lines += ["", "Per call, best of 5 (one step of (b) = 4 emulator frames, 2 screen reads "
                  "with their colour checks, 1 palette-path kernel call; the RGB rows are what "
                  "reading RGB would cost instead):", ""]
        lines += table(("Part", "µs per call"),
                       ((k, f"{v:.1f}") for k, v in res["components_us"].items()))
    if res.get("lock_step"):
        ls = res["lock_step"]
        rows = [
            ("step: mean (standard deviation)",
             f"{ls['step_mean_us']:.1f} ({ls['step_std_us']:.1f})"),
            ("a round waits for the slower of two steps: its mean over a step's",
             f"{ls['max_of_two_minus_mean_us']:.1f}"),
        ]
        if ls["resets"]:
            rows += [
                (f"reset ({ls['resets']} episodes of {ls['mean_episode_steps']:.0f} steps on "
                 f"average)", f"{ls['reset_us']:.0f}"),
                ("a reset stalls the other env: per round",
                 f"{ls['reset_stall_per_round_us']:.1f}"),
            ]
        else:
            rows.append(("reset", "no episode ended in this run"))
        lines += [
            "",
            f"Lock step, from {ls['steps']:,} steps of (b) timed one by one (see lock_step()): "
            "what two envs in lock step lose per round against twice one env, before the "
            "pool's own cost:",
            "",
            *table(("", "µs"), rows),
        ]
    lines += ["", "Targets:", "", *targets_table(res["targets"])]
    lines += ["", f"Total runtime {res['runtime_s']:.0f} s."]
    return "\n".join(lines)


def components(game: str, calls: int) -> dict:
    """Microseconds per call of what one step of our env does beside emulating."""
    import ale_py

    from agent.games import rom_path
    from agent.native import FramePreprocessor

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", SEED)
    ale.loadROM(str(rom_path(game)))
    for _ in range(200):
        ale.act(ale_py.Action.FIRE)
    h, w = ale.getScreenDims()
    rgb = np.empty((h, w, 3), np.uint8)
    idx = np.empty((h, w), np.uint8)
    out = np.empty((SCREEN_SIZE, SCREEN_SIZE), np.uint8)
    kernel = FramePreprocessor((h, w), (SCREEN_SIZE, SCREEN_SIZE))
    ale.getScreenRGB(rgb)
    for slot in (0, 1):  # the palette path, as the env runs it: both frames' colours learned
        if not kernel.screen(slot, ale.getScreen):
            kernel.learn_palette(slot, ale.getScreenRGB())
    stack = np.zeros((STACK, SCREEN_SIZE, SCREEN_SIZE), np.uint8)

    def act() -> None:
        if ale.game_over():  # acting on a finished game is nearly free: keep the game running
            ale.reset_game()
        ale.act(ale_py.Action.FIRE)

    parts = {
        "ale.act (one emulator frame)": act,
        "ale.getScreen (palette indices)": lambda: ale.getScreen(idx),
        "kernel.screen: ale.getScreen + unknown-colour check": lambda: kernel.screen(
            0, ale.getScreen) or kernel.learn_palette(0, ale.getScreenRGB()),  # (new colours: rare)
        "kernel.indexed: 2 index frames -> 84x84, stack shifted": lambda: kernel.indexed(
            0, 1, out, stack),
        "ale.getScreenRGB (palette -> RGB), not used": lambda: ale.getScreenRGB(rgb),
        "kernel on 2 RGB frames -> 84x84, not used": lambda: kernel(rgb, rgb, out),
    }
    result = {}
    for name, fn in parts.items():
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, (time.perf_counter() - t) / calls * 1e6)
        result[name] = best
    return result


def lock_step(game: str, steps: int) -> dict:
    """What two envs in lock step lose against twice one env, from one env's own steps.

    Times every step of (b) (an ``AtariEnv`` with seeded random actions) and every reset. A
    round of two envs in lock step costs the slower of two steps: drawn from these step times,
    that is ``max_of_two_minus_mean_us`` over a step. A reset keeps its env busy while the other
    waits, which costs a round about ``reset_us / mean_episode_steps`` over perfect parallel
    work. Whatever (e) loses beyond these two is the pool's own cost and preemption.
    """
    from agent.config import EnvConfig
    from agent.env import AtariEnv

    env = AtariEnv(EnvConfig(game=game), seed=SEED)
    env.reset()
    next_action = action_stream(len(env.actions))
    step_us, reset_us, lengths, length = [], [], [], 0
    clock = time.perf_counter
    for _ in range(steps):
        t = clock()
        s = env.step(next_action())
        step_us.append((clock() - t) * 1e6)
        length += 1
        if s.terminated or s.truncated:
            t = clock()
            env.reset()
            reset_us.append((clock() - t) * 1e6)
            lengths.append(length)
            length = 0
    env.close()
    times = np.asarray(step_us)
    pairs = np.random.default_rng(SEED).choice(times, (100_000, 2))
    episode = float(np.mean(lengths)) if lengths else None  # (none ended: a short run)
    reset = float(np.mean(reset_us)) if reset_us else None
    return {
        "steps": steps,
        "step_mean_us": float(times.mean()),
        "step_std_us": float(times.std()),
        "max_of_two_minus_mean_us": float(pairs.max(axis=1).mean() - times.mean()),
        "resets": len(reset_us),
        "reset_us": reset,
        "mean_episode_steps": episode,
        "reset_stall_per_round_us": reset / episode if lengths else None,
    }


def machine_info() -> dict:
    """The machine and the libraries the rows use (shared with bench_schedules.py)."""
    import ale_py
    import gymnasium

    from agent.native import FRAME_KERNEL

    return benchio.machine_info(
        usable_cpus=usable_cpus(), frame_kernel=FRAME_KERNEL, numpy=np.__version__,
        ale_py=ale_py.__version__, gymnasium=gymnasium.__version__, loadavg_start=loadavg(),
    )


# ------------------------------------------------------------------------------------ main
ROW_KEYS = (
    "raw_ale", "raw_ale_2proc", "single", "gymnasium", "atarivectorenv_1", "atarivectorenv_2",
    "workers_2", "workers_2_all_in_workers",
)


def parser_for(doc: str, row_keys: tuple[str, ...]) -> argparse.ArgumentParser:
    """The options of the env benchmarks (this one and bench_schedules.py)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short repeats (smoke run)")
    parser.add_argument("--game", default="phoenix", help="ALE ROM id, snake_case (phoenix)")
    parser.add_argument("--json", metavar="PATH", help="write the results as one JSON object")
    parser.add_argument("--seconds", type=float, help="wall time per repeat (2.5; quick 0.3)")
    parser.add_argument("--repeats", type=int, help="timed repeats per row (5; quick 3)")
    parser.add_argument(
        "--skip", action="append", default=[], choices=row_keys, metavar="ROW",
        help=f"leave a row out (repeatable): {', '.join(row_keys)}",
    )
    return parser


def timing(args, parser: argparse.ArgumentParser) -> tuple[float, int, float]:
    """(seconds per repeat, repeats, warm-up seconds) from the parsed options."""
    seconds = args.seconds if args.seconds is not None else (0.3 if args.quick else 2.5)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    if seconds <= 0 or repeats < 1:
        parser.error("--seconds must be > 0 and --repeats >= 1")
    return seconds, repeats, min(seconds, 0.2 if args.quick else 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(__doc__, ROW_KEYS)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "INDEX"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:  # a child of a make_processes() row
        return child_loop(args.game, args.child[0], int(args.child[1]))

    t0, log = time.perf_counter(), progress_log()
    quick = args.quick
    seconds, repeats, warmup = timing(args, parser)

    res: dict = {
        "machine": machine_info(),
        "game": args.game,
        "quick": quick,
        "repeats": repeats,
        "seconds_per_repeat": seconds,
        "warmup_s": warmup,
        "settings": dict(
            frameskip=FRAMESKIP, repeat_action_probability=STICKY, noop_max=NOOP_MAX,
            screen_size=SCREEN_SIZE, stack=STACK, seed=SEED,
            atarivectorenv=dict(batch_size=0, num_threads="num_envs", maxpool=True),
        ),
    }
    log("per-step components")
    res["components_us"] = components(args.game, 200 if quick else 2000)
    log("lock-step losses")
    res["lock_step"] = lock_step(args.game, 2_000 if quick else 20_000)
    rows = build_rows(args.game, set(args.skip), log)
    try:
        measure(rows, seconds, repeats, warmup, log)
    finally:
        for row in rows:
            close_quietly(row)

    res["rows"] = [row_result(row) for row in rows]
    sps = {row["key"]: row["steps_per_s"] for row in res["rows"]}
    res["steps_per_s"] = sps
    res["ratios"] = dict(
        single_vs_raw=ratio(sps["single"], sps["raw_ale"]),
        single_vs_gymnasium=ratio(sps["single"], sps["gymnasium"]),
        workers2_vs_single=ratio(sps["workers_2"], sps["single"]),
        workers2_vs_atarivectorenv=ratio(sps["workers_2"], sps["atarivectorenv_2"]),
        # Context, no target: how much the machine parallelises, and how much of that we reach.
        raw2proc_vs_raw=ratio(sps["raw_ale_2proc"], sps["raw_ale"]),
        workers2_vs_raw2proc=ratio(sps["workers_2"], sps["raw_ale_2proc"]),
        workers2_all_in_workers_vs_single=ratio(sps["workers_2_all_in_workers"], sps["single"]),
        single_x2_vs_raw2proc=ratio(
            None if sps["single"] is None else 2 * sps["single"], sps["raw_ale_2proc"]
        ),
    )
    res.update(res["ratios"])  # the four ratios also at the top level
    res["targets"] = targets(res)
    res["machine"]["loadavg_end"] = loadavg()
    res["runtime_s"] = time.perf_counter() - t0

    emit(render(res), res, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
