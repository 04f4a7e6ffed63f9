"""Run one of scripts/bench_*.py as a user would, for the benchmarks' smoke tests."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_script(name: str):
    """scripts/<name>.py as a module, for tests of its functions (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench(script: str, json_path: pathlib.Path, *args: str, timeout: float = 300,
              env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """`python scripts/<script> --quick <args> --json <json_path>` from the repository root:
    the finished process (its exit status asserted 0) and the JSON it wrote."""
    proc = subprocess.run(
        [sys.executable, f"scripts/{script}", "--quick", *args, "--json", str(json_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(json_path.read_text())


def with_root_on_path() -> dict:
    """This environment with the repository root first on PYTHONPATH."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
