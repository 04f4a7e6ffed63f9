"""Smoke test of scripts/bench_play.py: it records through play, times every phase, prints its
table and writes its JSON."""

import pytest

from tests.benchrun import run_bench

PHASES = ("emulate", "act", "draw", "encode", "other")


def test_bench_play_times_every_phase_of_a_recording(tmp_path):
    proc, result = run_bench("bench_play.py", tmp_path / "play.json", "--steps", "20")
    assert "| phase | ms per agent step | share |" in proc.stdout
    assert "| encode (cv2.VideoWriter mp4v) |" in proc.stdout
    assert "x real time" in proc.stdout and "| recording >= 5x real time" in proc.stdout
    assert result["steps"] == 20 and result["repeats"] == 1 and result["game"] == "breakout"
    assert result["frame_size"] == [904, 630] and result["real_time_ms_per_step"] == \
        pytest.approx(4 / 60 * 1e3)
    (run,) = result["runs"]
    assert run["steps"] == 20 and run["video_bytes"] > 0  # the MP4s were written
    ms = result["ms_per_step"]
    for phase in PHASES[:-1]:  # every wrapped phase ran
        assert ms[phase] > 0, phase
    assert ms["total"] == pytest.approx(sum(ms[p] for p in PHASES), rel=1e-6)
    assert result["vs_real_time"] == pytest.approx(result["real_time_ms_per_step"] / ms["total"])
    assert result["targets"][0]["met"] == (result["vs_real_time"] >= 5)
