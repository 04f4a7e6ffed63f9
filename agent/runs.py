"""Run directories: naming, finding the one to resume, listing, archiving for --fresh.

A run directory holds config.toml (the effective config), metrics.jsonl, TensorBoard events,
checkpoints/, incidents/, status.json (state, steps, last update time) and .train.lock (held
by the one `atari-agent train` that writes there).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from agent.checkpoint import CheckpointStore, atomic_write
from agent.files import pid_alive


def new_run_dir(runs_dir: str | Path, game: str, name: str = "") -> Path:
    """runs_dir/<name>, or runs_dir/<game>-<YYYYmmdd-HHMMSS> (made unique with -2, -3, ...)."""
    root = Path(runs_dir)
    base = name or f"{game}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = root / base, 2
    while not name and path.exists():
        path, n = root / f"{base}-{n}", n + 1
    try:
        path.mkdir(parents=True, exist_ok=bool(name))
    except OSError as exc:
        raise ValueError(f"cannot create run directory {path}: {exc.strerror}") from None
    return path


LOCK_NAME = ".train.lock"


def lock_run(run_dir: Path):
    """Claim `run_dir` for this process's training: an exclusive flock on RUN_DIR/.train.lock,
    held until the returned file is closed or the process ends (however it ends: the kernel
    drops the lock). ValueError, naming the holder, when another process holds it — two
    trainers in one run directory would interleave checkpoints and metrics, and --fresh would
    archive a running run's files."""
    f = open(Path(run_dir) / LOCK_NAME, "a+b")  # noqa: SIM115 (held for the run's lifetime)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        pid = read_status(run_dir).get("pid")
        holder = f"pid {pid}" if isinstance(pid, int) and pid_alive(pid) else "another process"
        raise ValueError(f"{run_dir} is in use by another `atari-agent train` ({holder}): "
                         f"wait for it to end or stop it (Ctrl-C), or choose another "
                         f"--name") from None
    return f


def has_checkpoints(run_dir: Path) -> bool:
    return any((Path(run_dir) / "checkpoints").glob("ckpt-*.pt"))


def latest_run(runs_dir: str | Path, game: str | None = None) -> Path | None:
    """The most recently updated run directory with checkpoints (of `game`, if given)."""
    runs = [r for r in list_runs(runs_dir) if r["checkpoints"] and (game is None or
                                                                    r["game"] == game)]
    return Path(runs_dir) / max(runs, key=lambda r: r["updated"])["name"] if runs else None


def write_status(run_dir: Path, **status) -> None:
    data = {"updated": time.time(), "pid": os.getpid(), **status}
    text = json.dumps(data, indent=1).encode()
    atomic_write(Path(run_dir) / "status.json", lambda f: f.write(text))


def read_status(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def list_runs(runs_dir: str | Path) -> list[dict]:
    """One dict per run directory under runs_dir: name, game, state, steps, scores, updated."""
    root = Path(runs_dir)
    rows = []
    for d in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        if not (d / "config.toml").is_file():
            continue
        status = read_status(d)
        pid = status.get("pid")
        if status.get("state") == "running" and isinstance(pid, int) and not pid_alive(pid):
            # Its process ended without saying so (kill -9, OOM killer, a crash): not running.
            status["state"] = "died"
        try:
            index = json.loads((d / "checkpoints" / "index.json").read_text())
        except (OSError, ValueError):
            index = {}
        best = index.get("best") or {}
        rows.append({
            "name": d.name, "game": status.get("game", "?"), "state": status.get("state", "?"),
            "steps": status.get("steps", 0), "total_steps": status.get("total_steps"),
            "score_mean100": status.get("score_mean100"), "best_eval": best.get("eval_score"),
            "checkpoints": len(list((d / "checkpoints").glob("ckpt-*.pt"))),
            "updated": status.get("updated", d.stat().st_mtime),
        })
    return rows


def runs_table(runs_dir: str | Path) -> str:
    rows = list_runs(runs_dir)
    if not rows:
        return f"no runs in {runs_dir}/ (start one with `atari-agent train`)"
    lines = [f"{'run':<34} {'game':<15} {'state':<11} {'steps':>12} {'score100':>9} "
             f"{'best eval':>9} {'ckpts':>5}  updated"]
    for r in sorted(rows, key=lambda r: r["updated"]):
        steps = f"{r['steps']:,}" + (f"/{r['total_steps']:,}" if r["total_steps"] else "")
        # (scores as `atari-agent evaluate` prints them)
        s100 = "-" if r["score_mean100"] is None else f"{r['score_mean100']:,.1f}"
        best = "-" if r["best_eval"] is None else f"{r['best_eval']:,.1f}"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["updated"]))
        lines.append(f"{r['name']:<34} {r['game']:<15} {r['state']:<11} {steps:>12} {s100:>9} "
                     f"{best:>9} {r['checkpoints']:>5}  {when}")
    return "\n".join(lines)


def archive(run_dir: Path) -> Path:
    """Move a run's checkpoints and logs into run_dir/archive-<time>/ (for --fresh): kept, not
    deleted, and out of the way of the new run."""
    run_dir = Path(run_dir)
    dest = run_dir / f"archive-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 2
    while dest.exists():
        dest, n = run_dir / f"archive-{time.strftime('%Y%m%d-%H%M%S')}-{n}", n + 1
    dest.mkdir()
    for p in run_dir.iterdir():
        if p != dest and not p.name.startswith("archive-") and p.name != LOCK_NAME:
            p.rename(dest / p.name)
    return dest


def checkpoints_dir(path: Path) -> Path:
    """The checkpoints/ folder of a run directory (or of that folder itself), or ValueError."""
    path = Path(path)
    ckpt_dir = path if path.name == "checkpoints" else path / "checkpoints"
    if not ckpt_dir.is_dir():
        raise ValueError(f"{path} is not a run directory: it has no checkpoints/ folder "
                         f"(expected a checkpoint file or a directory made by `atari-agent "
                         f"train`)")
    return ckpt_dir


def checkpoint_to_play(path: Path) -> Path:
    """A checkpoint file as given; for a run directory, its best.pt or else its latest."""
    path = Path(path)
    if not path.is_dir():
        return path
    ckpt_dir = checkpoints_dir(path)
    best = ckpt_dir / "best.pt"
    found = best if best.is_file() else CheckpointStore(ckpt_dir.parent).latest()
    if found is None:
        raise ValueError(f"{path} has no checkpoints (expected {ckpt_dir}/*.pt)")
    return found
