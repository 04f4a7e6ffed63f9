"""README's first command, run as a newcomer runs it: does the demo beat a random policy, and
within how many minutes? (issue 16's target: by at least 3 standard errors of the difference
over 30 episodes each, within 10 minutes in all on a 2-core machine, install time excluded).

Run from the repository root:

    python scripts/bench_demo.py                         # 3 runs, each from a fresh clone
    python scripts/bench_demo.py --runs 1 --json demo.json
    python scripts/bench_demo.py --quick                 # smoke: one demo at 2,000 steps, here

A full run: `git clone` of this repository's committed HEAD into a temporary directory, a
virtual environment there that sees this Python's site-packages (so the pinned torch on disk is
found, not downloaded; everything else README's command installs is installed into the venv,
the Cython extension built from the clone), then README's first command as README.md writes it
(its first ```bash block), in two timed parts: the install (everything before `&& atari-agent
demo`) and `atari-agent demo --json FILE`, whose wall time, from the process's start to its
exit, is the demo's time. The clone is deleted after each run. `--quick` skips the clone and the
install: one `atari-agent demo --steps 2000 --episodes 2` in this environment.

The table: per run, the install and demo minutes, both policies' mean ± std (30 episodes each
under the evaluation protocol), the difference in standard errors of the difference (z), and
whether the run met the target (z >= 3 and the demo within 10 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchio  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET_Z = 3.0
TARGET_MIN = 10.0
QUICK_ARGS = ("--steps", "2000", "--episodes", "2")


def readme_command(readme: Path = ROOT / "README.md") -> tuple[str, str]:
    """README's first command, split into (install part, the demo command)."""
    block = re.search(r"```bash\n(.*?)```", readme.read_text(), re.S)
    if block is None:
        raise SystemExit("README.md has no ```bash block")
    command = block.group(1).strip()
    install, sep, demo = command.rpartition("&&")
    if not sep or not demo.strip().startswith("atari-agent demo"):
        raise SystemExit(f"README's first command does not end in `&& atari-agent demo`: "
                         f"{command!r}")
    return install.strip(), demo.strip()


def run_timed(cmd, cwd: Path, env: dict | None, log, what: str, shell: bool = False) -> float:
    """Run `cmd` to its end (its output on ours), its wall seconds; exit on failure."""
    log(f"{what}: {cmd if shell else ' '.join(map(str, cmd))}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, shell=shell, stdout=sys.stderr)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed with exit status {proc.returncode}")
    return dt


def fresh_run(i: int, log) -> dict:
    """One run of README's first command in a fresh clone and venv."""
    install, demo_cmd = readme_command()
    tmp = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    try:
        clone, venv = tmp / "clone", tmp / "venv"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, check=True,
                                capture_output=True, text=True).stdout.strip()
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                       check=True)
        env = _clean_env()
        env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", VIRTUAL_ENV=str(venv))
        install_s = run_timed(install, clone, env, log, f"run {i}: install", shell=True)
        out = tmp / "demo.json"
        demo_s = run_timed(f"{demo_cmd} --json {out}", clone, env, log, f"run {i}: demo",
                           shell=True)
        return _row(i, json.loads(out.read_text()), demo_s, install_s, commit)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def quick_run(log) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    try:
        out = tmp / "demo.json"
        demo_s = run_timed([sys.executable, "-m", "agent", "demo", *QUICK_ARGS, "--runs-dir",
                            str(tmp / "runs"), "--json", str(out)], ROOT, None, log, "demo")
        return _row(1, json.loads(out.read_text()), demo_s, None, None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _clean_env() -> dict:
    # a PYTHONPATH pointing at this checkout would hide the clone's own package
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _row(i: int, d: dict, demo_s: float, install_s: float | None, commit: str | None) -> dict:
    met = d["z"] >= TARGET_Z and demo_s <= TARGET_MIN * 60
    return {"run": i, "commit": commit, "install_s": install_s, "demo_s": demo_s,
            "train_s": d["train_s"], "game": d["game"], "action_set": d["action_set"],
            "steps": d["steps"], "episodes": d["episodes"],
            "agent_mean": d["agent"]["mean"], "agent_std": d["agent"]["std"],
            "random_mean": d["random"]["mean"], "random_std": d["random"]["std"],
            "difference": d["difference"], "se_difference": d["se_difference"], "z": d["z"],
            "met": met, "verdict": d["verdict"]}


def render(rows: list[dict]) -> str:
    lines = benchio.table(
        ("run", "install min", "demo min", "game", "steps", "agent", "random", "z", "target"),
        ((r["run"], "-" if r["install_s"] is None else f"{r['install_s'] / 60:.1f}",
          f"{r['demo_s'] / 60:.1f}", f"{r['game']} ({r['action_set']})", f"{r['steps']:,}",
          f"{r['agent_mean']:,.1f} ± {r['agent_std']:,.1f}",
          f"{r['random_mean']:,.1f} ± {r['random_std']:,.1f}", f"{r['z']:.1f}",
          "met" if r["met"] else "NOT met") for r in rows))
    met = sum(r["met"] for r in rows)
    return "\n".join(lines + ["", f"target (z >= {TARGET_Z:g} and the demo within "
                                  f"{TARGET_MIN:g} min): met in {met} of {len(rows)} runs"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="fresh-clone runs (default 3)")
    ap.add_argument("--quick", action="store_true",
                    help="one 2,000-step demo in this environment, no clone")
    ap.add_argument("--json", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error(f"--runs must be at least 1, got {args.runs}")
    log = benchio.progress_log()
    machine = benchio.machine_info(loadavg_start=benchio.loadavg())
    rows = [quick_run(log)] if args.quick else [fresh_run(i, log)
                                                for i in range(1, args.runs + 1)]
    machine["loadavg_end"] = benchio.loadavg()
    report = "\n".join([f"demo runs on {benchio.describe_machine(machine)}; "
                        f"{benchio.describe_load(machine)}", "", render(rows)])
    benchio.emit(report, {"machine": machine, "quick": args.quick, "target_z": TARGET_Z,
                          "target_minutes": TARGET_MIN, "runs": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
