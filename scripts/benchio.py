"""The one harness of the benchmarks in scripts/ (bench_*.py): what each says about the machine and
its load, how it formats numbers and ratios, and how it prints its tables and writes its JSON.

- machine: `machine_info` (the fields every benchmark's JSON has under "machine", plus its
  own), `cpu_name`, `usable_cpus`, `describe_machine` (its one-line summary);
- load: `loadavg`, `describe_load` (load average at start and end), and the other load during
  a phase, from /proc/stat: `load_mark` at its start and end, then `other_load`;
- numbers: `ratio` (None when a side is missing), `fmt`, `fmt_int`, `fmt_ratio`;
- output: `table` and `targets_table` (Markdown), `progress_log` (timestamped lines on stderr),
  `emit` (print the report, write the JSON);
- scripts that drive `atari-agent train` (bench_time_to_skill.py, study_collapse.py): `start`,
  `split_passthrough` (arguments after `--`), `check_copy_paths`, `stop_runs` (by pid).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path


# ---------------------------------------------------------------------------------- machine
def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity on Linux), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count()


def machine_info(**extra) -> dict:
    """What every benchmark reports about the machine (cpu_count, cpu, system, python), then
    `extra`: its own fields (library versions, thread counts, ``loadavg_start=loadavg()``)."""
    return dict(cpu_count=os.cpu_count(), cpu=cpu_name(),
                system=f"{platform.system()} {platform.machine()}",
                python=platform.python_version(), **extra)


def describe_machine(machine: dict) -> str:
    """"<n> CPUs (<model>), <system>", from `machine_info`'s fields."""
    return f"{machine['cpu_count']} CPUs ({machine['cpu']}), {machine['system']}"


# ---------------------------------------------------------------------------------- load
def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, or "n/a"."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def describe_load(machine: dict) -> str:
    """"load average <start> at start, <end> at end" (machine's loadavg_start, loadavg_end)."""
    return f"load average {machine['loadavg_start']} at start, {machine['loadavg_end']} at end"


def busy_cpu_s() -> float | None:
    """CPU seconds all cores of the machine have been busy since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def load_mark() -> tuple[float, float, float | None]:
    """(wall, this process's CPU, the machine's busy CPU) now: one end of a phase."""
    return time.perf_counter(), time.process_time(), busy_cpu_s()


def other_load(a: tuple, b: tuple) -> float | None:
    """CPU seconds per wall second used by other processes between two `load_mark()`s (None
    where /proc/stat is not readable): how many cores other load took meanwhile."""
    if a[2] is None or b[2] is None:
        return None
    wall = b[0] - a[0]
    return max((b[2] - a[2] - (b[1] - a[1])) / wall, 0.0)


# ---------------------------------------------------------------------------------- numbers
def ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is missing (a row that did not run) or den is 0."""
    return None if num is None or den is None or den == 0 else num / den


def fmt(x: float | None, spec: str = ",.0f") -> str:
    """`x` formatted with `spec`, or "n/a"."""
    return "n/a" if x is None else f"{x:{spec}}"


def fmt_int(x: float) -> str:
    """A count or rate with thousands separators and no decimals: 12,345."""
    return f"{x:,.0f}"


def fmt_ratio(r: float | None, missing: str = "-") -> str:
    """A ratio as "1.23x", or `missing` when there is none."""
    return missing if r is None else f"{r:.2f}x"


# ---------------------------------------------------------------------------------- output
def table(header: Sequence, rows: Iterable[Sequence], align: str | None = None) -> list[str]:
    """The lines of a Markdown table: `header`, its rule, one line a row (cells through str).
    `align`: a letter a column, "l" (left) or "r" (right); by default the first column left
    and the others right."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return [_row(header), rule, *(_row(r) for r in rows)]


def _row(cells: Sequence) -> str:
    return "|" + "|".join(f" {c} " if c != "" else " " for c in map(str, cells)) + "|"


def targets_table(targets: list[dict], missing: str = "n/a") -> list[str]:
    """The targets of a run as a Markdown table: each target's text, what was measured and
    whether it was met (``met``: True, False, or None, shown as `missing`)."""
    status = {True: "met", False: "NOT met", None: missing}
    return table(("Target", "Measured", "Status"),
                 ((t["target"], t["measured"], status[t["met"]]) for t in targets), "lrl")


def progress_log() -> Callable[[str], None]:
    """A function that prints a message on stderr after the seconds since this call."""
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    return log


def emit(report: str, result: dict, json_path: str | None) -> None:
    """Print `report` (the tables) and, when `json_path` is given, write `result` there as one
    JSON object."""
    print(report)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


def split_passthrough(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """(the script's own arguments, those after `--`, passed on to `atari-agent train`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    return argv[:argv.index("--")], argv[argv.index("--") + 1:]


def check_copy_paths(parser, *paths: str | None) -> None:
    """Refuse (parser.error) an output copy (--json, --png) whose directory does not exist."""
    for path in paths:
        if path and not Path(path).resolve().parent.is_dir():
            parser.error(f"{path}: its directory does not exist")


def stop_runs(procs: dict, log, grace_s: float) -> None:
    """Stop the training runs still going as Ctrl-C does (SIGINT to each pid: they save their
    checkpoint and exit), then kill by pid any that has not exited within `grace_s`."""
    for name, proc in procs.items():
        if proc.poll() is None:
            log(f"stopping {name} (SIGINT to pid {proc.pid})")
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for name, proc in procs.items():
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{name} did not exit within {grace_s:.0f} s: killing pid {proc.pid}")
            proc.kill()
            proc.wait()


def start(out: str) -> tuple[Path, Callable[[str], None], dict]:
    """A training script's start: SIGTERM acts as Ctrl-C (sys.exit, so `finally` blocks stop
    the runs it started by their pids), --out made; (out, progress log, machine info)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path, progress_log(), machine_info(loadavg_start=loadavg())
