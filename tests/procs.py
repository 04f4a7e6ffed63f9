"""Process helpers for tests that start workers: who is alive, who is below whom (from /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path


def proc_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie that nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_gone(pids, seconds: float = 5.0) -> list[int]:
    """The pids still running after waiting up to `seconds` for them to end."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [p for p in pids if proc_running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


def children_map() -> dict[int, list[int]]:
    """parent pid -> live child pids."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    """Live processes anywhere below `pid`."""
    children = children_map()
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@contextmanager
def reaped(proc: subprocess.Popen):
    """Yields `proc`, a child the test started; on the way out, one still running (a failed
    assertion, a timeout) is killed by its pid and reaped, so no test leaves it behind."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@contextmanager
def closing_pools(build):
    """Yields `make(*args, **kwargs)`, which builds a VecEnv with `build` and keeps it; on the
    way out every one is closed (a worker a test left stopped is continued first) and none of
    their workers may still run."""
    made: list = []

    def make(*args, **kwargs):
        vec = build(*args, **kwargs)
        made.append(vec)
        return vec

    try:
        yield make
    finally:
        pids = [pid for vec in made for pid in getattr(vec, "pids", [])]
        for vec in made:
            for pid in getattr(vec, "pids", []):  # a test may leave a worker stopped
                if proc_running(pid):
                    os.kill(pid, signal.SIGCONT)
            vec.close()
        assert wait_gone(pids) == []
