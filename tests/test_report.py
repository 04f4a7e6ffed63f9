"""Reporting: every metrics.jsonl line parses (NaN included), rows carry the documented keys,
the table prints one line per row."""

from __future__ import annotations

import io
import json

from agent.report import ROW_KEYS, Reporter, format_row, header
from agent.tensorboard import read_events


def _row(**changes):
    row = {k: 0.0 for k in ROW_KEYS}
    row.update(steps=1000, updates=10, episodes=3, target_age=7,
               greedy_dist={"noop": 0.1, "ZAP": 0.2, "FIRE": 0.6, "FIRE+ZAP": 0.1},
               replay_dist={"noop": 0.25, "ZAP": 0.25, "FIRE": 0.25, "FIRE+ZAP": 0.25})
    row.update(changes)
    return row


def test_rows_and_events_are_json_lines_with_nan_kept_readable(tmp_path):
    out = io.StringIO()
    rep = Reporter(tmp_path, total_steps=10_000, out=out)
    rep.row(_row(loss=float("nan"), q_max=float("inf")))
    rep.event("divergence", "loss is nan", steps=1000, reasons=["loss is nan"])
    rep.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert lines[0]["loss"] == "nan" and lines[0]["q_max"] == "inf"
    assert set(ROW_KEYS) <= set(lines[0])
    assert lines[1]["event"] == "divergence" and lines[1]["reasons"] == ["loss is nan"]
    text = out.getvalue()
    assert header() in text and "[divergence] loss is nan" in text
    events = read_events(next(tmp_path.glob("events.out.tfevents.*")))
    scalars = events[-1]["scalars"]
    assert events[-1]["step"] == 1000 and scalars["greedy_dist/FIRE"] == 0.6000000238418579


def test_a_row_before_learning_shows_dashes():
    row = _row(loss=None, agree=None, greedy_dist=None, replay_dist=None, q_min=None,
               q_mean=None, q_max=None, grad_norm=None, clip_delta=None, td_clip_frac=None,
               score_mean100=None)
    line = format_row(row)
    assert "1,000" in line and line.count("-") >= 8
    assert len(line) == len(header())


def test_epsilon_and_episodes_columns_cannot_be_confused():
    # (the printed headers only: metrics.jsonl keeps its keys "epsilon" and "episodes")
    assert "epsilon" in ROW_KEYS and "episodes" in ROW_KEYS
    head = header()
    assert "eps" not in head.lower().split() and "Epsilon" in head and "Episodes" in head
    line = format_row(_row(epsilon=0.123, episodes=7))
    for name, value in (("Epsilon", "0.123"), ("Episodes", "7")):
        end = head.index(name) + len(name)  # right-aligned under its header
        assert line[:end].split()[-1] == value


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_eta_comes_from_the_learning_phase_not_the_warm_up(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("agent.report.time.monotonic", lambda: clock[0])
    out = _Terminal()
    rep = Reporter(tmp_path, total_steps=11_000, out=out, tensorboard=False,
                   learning_starts=1_000)

    def bar(steps, sps, seconds):
        clock[0] += seconds
        out.seek(0)
        out.truncate()
        rep.progress(steps, sps)
        return out.getvalue()

    # warm-up: 5,000 SPS would promise a 2-second run; no ETA is given from that speed
    line = bar(500, 5_000.0, 1.0)
    assert "500/11,000 steps" in line and "ETA after warm-up" in line
    assert "ETA --:--" in bar(1_000, 5_000.0, 1.0)  # learning starts: nothing measured yet
    # 10 s of learning at 100 steps/s: 9,000 steps left take 1:30, whatever the caller's SPS
    assert "ETA 1:30" in bar(2_000, 3_000.0, 10.0)
    rep.close()
