"""Torch threads on a shared machine: training speed with and without another busy process.

Each cell is a real `atari-agent train` run (Pong, default settings but a short warm-up, stopped
by Ctrl-C after a fixed time of learning) in its own process, so OMP_WAIT_POLICY and the thread
count take effect from the start. Its speed is the learning phase's agent steps per second, read
from the run's metrics.jsonl rows (the warm-up excluded). "busy" runs the same training beside
one process that spins on one core the whole time (another user's job; started here and stopped
by its pid).

What it answers: which `learner.threads` default degrades gracefully. With one torch thread per
core, every OpenMP parallel region waits at its barrier for the thread whose core the other
process holds, so a busy neighbour costs far more than its share of the machine.

    python scripts/bench_threads.py                 # threads 1 and per-core, idle and busy
    python scripts/bench_threads.py --quick         # a smoke run (seconds of training)
    python scripts/bench_threads.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchio  # noqa: E402

SPIN = "while True: pass"


def learning_sps(run_dir: Path, learning_starts: int) -> tuple[float | None, float | None]:
    """(agent steps/s, updates/s) over the rows after learning began: the steps and updates
    between the first such row and the last, over the time between them."""
    rows = [r for r in _rows(run_dir) if "event" not in r]
    rows = [r for r in rows if "event" not in r and r.get("steps", 0) > learning_starts]
    if len(rows) < 2:
        return None, None
    a, b = rows[0], rows[-1]
    dt = b["time"] - a["time"]
    if dt <= 0:
        return None, None
    return (b["steps"] - a["steps"]) / dt, (b["updates"] - a["updates"]) / dt


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    # (a line still being written is not a whole object yet)
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def run_cell(threads: int, wait_policy: str, busy: bool, args, work: Path) -> dict:
    """One training run, stopped by Ctrl-C (SIGINT to our child) `args.seconds` after its
    learning phase began; returns the learning phase's speed."""
    name = f"t{threads}-{wait_policy}-{'busy' if busy else 'idle'}"
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # the run's --threads decides
    if wait_policy != "default":
        env["OMP_WAIT_POLICY"] = wait_policy.upper()
    cmd = [sys.executable, "-m", "agent.cli", "train", "--game", args.game,
           "--total-steps", "10000000", "--learning-starts", str(args.learning_starts),
           "--threads", str(threads), "--envs", str(args.envs or "auto"), "--seed", "0",
           "--runs-dir", str(work), "--name", name, "--report-seconds", "2",
           "--checkpoint-every", "10000000", "--eval-every", "0", "--no-save-replay"]
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + args.timeout
        while not any(r.get("steps", 0) > args.learning_starts for r in _rows(work / name)
                      if "event" not in r):
            if proc.poll() is not None:
                raise RuntimeError(f"{name}: train exited {proc.returncode}: "
                                   f"{proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: no learning row within {args.timeout:.0f} s")
            time.sleep(0.5)
        time.sleep(args.seconds)
        proc.send_signal(signal.SIGINT)  # saves and exits 130, with a last row
        proc.wait(timeout=args.timeout)
    finally:
        for child in (proc, spinner):  # our own children, by their pids
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
    sps, ups = learning_sps(work / name, args.learning_starts)
    return dict(threads=threads, wait_policy=wait_policy, busy=busy, sps=sps,
                updates_per_s=ups, train_exit=proc.returncode,
                pids=[c.pid for c in (proc, spinner) if c is not None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--game", default="pong")
    parser.add_argument("--seconds", type=float, help="seconds of learning a run (40; quick 6)")
    parser.add_argument("--learning-starts", type=int, help="warm-up steps (2,000; quick 600)")
    parser.add_argument("--envs", type=int, default=0, help="train's --envs (0: auto)")
    parser.add_argument("--threads", default=None,
                        help="comma list of thread counts (default: 1 and one per core)")
    parser.add_argument("--wait-policies", default="default,passive",
                        help="OMP_WAIT_POLICY values, comma list: default, passive, active")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds a run may take to reach its learning phase")
    parser.add_argument("--json", metavar="PATH", help="write the results as one JSON object")
    args = parser.parse_args()
    args.seconds = args.seconds or (6.0 if args.quick else 40.0)
    args.learning_starts = args.learning_starts or (600 if args.quick else 2_000)
    cores = benchio.usable_cpus()
    threads = ([int(t) for t in args.threads.split(",")] if args.threads
               else sorted({1, cores}))
    policies = args.wait_policies.split(",")
    if args.quick:
        threads, policies = threads[:1], policies[:1]
    machine = benchio.machine_info(loadavg_start=benchio.loadavg())
    log = benchio.progress_log()
    cells = []
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        for t in threads:
            for policy in policies:
                for busy in (False, True):
                    log(f"threads {t}, OMP_WAIT_POLICY {policy}, {'busy' if busy else 'idle'}")
                    cells.append(run_cell(t, policy, busy, args, Path(tmp)))
    machine["loadavg_end"] = benchio.loadavg()

    def cell(t, policy, busy):
        return next(c for c in cells if (c["threads"], c["wait_policy"], c["busy"]) ==
                    (t, policy, busy))

    rows = []
    for t in threads:
        for policy in policies:
            idle, busy = cell(t, policy, False), cell(t, policy, True)
            rows.append([t, policy, benchio.fmt(idle["sps"]), benchio.fmt(busy["sps"]),
                         benchio.fmt_ratio(benchio.ratio(busy["sps"], idle["sps"])),
                         benchio.fmt(idle["updates_per_s"], ".1f"),
                         benchio.fmt(busy["updates_per_s"], ".1f")])
    lines = [f"# Torch threads on a shared machine: {args.game}, {args.seconds:.0f} s of "
             f"learning a run after a warm-up of {args.learning_starts:,} steps, "
             f"--envs {args.envs or 'auto'}",
             f"{benchio.describe_machine(machine)}; {benchio.describe_load(machine)}", "",
             *benchio.table(["threads", "OMP_WAIT_POLICY", "SPS idle", "SPS busy",
                             "busy/idle", "updates/s idle", "updates/s busy"], rows), "",
             "SPS: agent steps per second in the learning phase; busy: beside one process "
             "spinning on one core."]
    result = dict(machine=machine, game=args.game, seconds=args.seconds,
                  learning_starts=args.learning_starts, envs=args.envs, cells=cells)
    benchio.emit("\n".join(lines), result, args.json)


if __name__ == "__main__":
    main()
