"""Why agent.workers.VecEnv steps its envs in lock step, env 0 in the calling process: the ways
to schedule two envs on this machine, measured in one run.

Run from the repository root (the `agent` package must be built and installed):

    python scripts/bench_schedules.py                  # full run: ~1.5 min (5 x 2.5 s a row)
    python scripts/bench_schedules.py --quick          # smoke run: ~10 s
    python scripts/bench_schedules.py --json sched.json

Rows (agent steps/s, as in scripts/bench_env.py: the same game, random actions, frameskip 4):

- (b) one ``AtariEnv`` in this process.
- (b) in 2 processes: two ``AtariEnv`` loops in two processes at once, nothing shared and
  nothing waited for. No way of running two envs on two cores gets more: this is the ceiling.
- lock step, env 0 here: ``VecEnv(num_envs=2)``, the default (bench_env's row (e)). Every
  step waits for both envs: the slower of the two steps sets the pace, and a reset (a few
  milliseconds) stalls the other env.
- lock step, every env in a worker: ``inline_first=False``.
- free-running, env 0 here: no env waits for the other. This process steps env 0 over and over
  and, after each of its steps, hands the worker its next action if the worker has answered.
- free-running, every env in a worker: this process only polls the workers' answers (yielding
  the CPU between looks) and hands each worker its next action as soon as it answers.

The free-running rows drive the same pool through `VecEnv.free_run()`: its shared command and
answer words, one worker at a time. Training keeps lock step; these rows show what dropping it
would gain. Both read the results after each answer, as lock step does.
"""

from __future__ import annotations

import os
import sys
import time

import bench_env as be
from benchio import (
    describe_load,
    emit,
    fmt_int,
    fmt_ratio,
    loadavg,
    progress_log,
    ratio,
    table,
)

ROW_KEYS = ("single", "single_2proc", "lockstep_inline", "lockstep_workers", "free_inline",
            "free_workers")


def make_free(row: be.Row, game: str, inline_first: bool) -> None:
    """A VecEnv whose envs run free (see the module docstring), as `row.run`."""
    from agent import workers
    from agent.config import EnvConfig

    env = workers.VecEnv(EnvConfig(game=game), num_envs=row.num_envs, seed=be.SEED,
                         inline_first=inline_first)
    row.close = env.close
    env.reset()
    row.actions = len(env.actions)
    next_action = be.action_stream(len(env.actions))

    def run(seconds: float) -> float:
        clock, relax = time.perf_counter, os.sched_yield
        steps = 0
        with env.free_run() as free:
            send, answered, results, ids = free.send, free.answered, free.results, free.workers
            start = clock()
            for i in ids:
                send(i, next_action())
            end = start + seconds
            while clock() < end:
                got = 0
                if inline_first:
                    send(0, next_action())  # env 0 steps here, now
                    got = 1
                for i in ids:
                    if answered(i):
                        got += 1
                        send(i, next_action())
                if got:
                    results()
                    steps += got
                else:
                    relax()
            # Each worker has one step in flight; close() waits for them and levels the
            # workers with catch-up steps (counted too), so that lock step can go on after.
            steps += len(ids) + free.close(catch_up_action=next_action())
            rate = steps / (clock() - start)
        env.step([0] * row.num_envs)  # lock step goes on from here
        return rate

    row.run = run


def build(game: str, skip: set[str], log) -> list[be.Row]:
    row = be.Row
    specs = [
        (row("single", "(b) agent.env.AtariEnv"), be.make_single),
        (row("single_2proc", "(b) in 2 processes, nothing shared: the ceiling", num_envs=2),
         lambda r, g: be.make_processes(r, g, "single")),
        (row("lockstep_inline", "lock step, env 0 here (VecEnv's default, bench_env's (e))",
             num_envs=2), be.make_workers),
        (row("lockstep_workers", "lock step, every env in a worker", num_envs=2),
         lambda r, g: be.make_workers(r, g, inline_first=False)),
        (row("free_inline", "free-running, env 0 here", num_envs=2),
         lambda r, g: make_free(r, g, inline_first=True)),
        (row("free_workers", "free-running, every env in a worker", num_envs=2),
         lambda r, g: make_free(r, g, inline_first=False)),
    ]
    return be.open_rows(specs, game, skip, log)


def render(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs; frame kernel {m['frame_kernel']}; "
        f"{describe_load(m)}.",
        f"Game `{res['game']}`; median of {res['repeats']} interleaved repeats of "
        f"{res['seconds_per_repeat']:g} s each.",
        "",
    ]
    sps = res["steps_per_s"]
    rows = []
    for r in res["rows"]:
        v = r["steps_per_s"]
        if v is None:
            rows.append([r["name"], r["num_envs"], f"n/a ({r['error']})", "-", "-", "-"])
            continue
        share = ratio(v, sps["single_2proc"])
        rows.append([r["name"], r["num_envs"], fmt_int(v),
                     f"{fmt_int(r['min'])} - {fmt_int(r['max'])}",
                     fmt_ratio(ratio(v, sps["single"])), "-" if share is None else f"{share:.0%}"])
    lines += table(("Schedule", "envs", "agent steps/s", "min - max", "vs (b)",
                    "share of the ceiling"), rows)
    live = {k: v for k, v in sps.items() if k not in ("single", "single_2proc") and v is not None}
    if live:
        best = max(live, key=live.get)
        name = next(r["name"] for r in res["rows"] if r["key"] == best)
        lines += ["", f"Fastest schedule in this run: {name}."]
    lines += ["", f"Total runtime {res['runtime_s']:.0f} s."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = be.parser_for(__doc__, ROW_KEYS)
    args = parser.parse_args(argv)
    t0, log = time.perf_counter(), progress_log()
    seconds, repeats, warmup = be.timing(args, parser)

    res: dict = {"machine": be.machine_info(), "game": args.game, "quick": args.quick,
                 "repeats": repeats, "seconds_per_repeat": seconds, "warmup_s": warmup}
    rows = build(args.game, set(args.skip), log)
    try:
        be.measure(rows, seconds, repeats, warmup, log)
    finally:
        for row in rows:
            be.close_quietly(row)
    res["rows"] = [be.row_result(r) for r in rows]
    sps = res["steps_per_s"] = {r["key"]: r["steps_per_s"] for r in res["rows"]}
    res["vs_single"] = {k: ratio(v, sps["single"]) for k, v in sps.items()}
    res["vs_ceiling"] = {k: ratio(v, sps["single_2proc"]) for k, v in sps.items()}
    res["machine"]["loadavg_end"] = loadavg()
    res["runtime_s"] = time.perf_counter() - t0
    emit(render(res), res, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
