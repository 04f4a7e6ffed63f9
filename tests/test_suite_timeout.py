"""The suite's own guard: a hung test fails alone (pytest-timeout), instead of using up CI."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_hung_test_is_stopped_by_the_configured_timeout(tmp_path):
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"]
    assert 0 < int(options["timeout"]) <= 900  # per test; CI's whole budget is 90 minutes
    hung = tmp_path / "test_hung.py"
    hung.write_text("import time\n\ndef test_hangs():\n    time.sleep(600)\n")
    # the project's config (-c), with its timeout shortened for this check
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-c", str(ROOT / "pyproject.toml"),
                           "--rootdir", str(tmp_path), "-o", "timeout=2", "-p", "no:cacheprovider",
                           str(hung)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Timeout" in proc.stdout + proc.stderr
