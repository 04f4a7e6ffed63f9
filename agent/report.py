"""Reporting a run: table rows on the terminal, metrics.jsonl, TensorBoard, a live progress bar.

metrics.jsonl is a stable interface: one JSON object per line. A diagnostics row holds at least

    time, steps, updates, sps, epsilon, episodes, score_mean100, loss, agree, greedy_dist,
    replay_dist, q_min, q_mean, q_max, q_state_std, grad_norm, clip_delta, td_clip_frac,
    target_age

(`agree` in percent 0-100; the two distributions map "noop", "ZAP", "FIRE", "FIRE+ZAP" to shares
summing to 1; learner fields are null before the first health check). Watchdog incidents and
other events are rows with an `event` key ("divergence", "rollback", "halt", "eval", "resume",
"interrupted", "save_failed": a checkpoint write failed, with `file`, `error` and `action`;
"error": bad data ended the run).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from agent.diagnostics import format_buttons
from agent.tensorboard import EventWriter

ROW_KEYS = ("time", "steps", "updates", "sps", "epsilon", "lr", "episodes", "score_mean100",
            "loss", "agree", "greedy_dist", "replay_dist", "q_min", "q_mean", "q_max",
            "q_state_std", "grad_norm", "clip_delta", "td_clip_frac", "target_age")
"""Every key of a diagnostics row in metrics.jsonl, in order."""

_COLUMNS = (  # header, width, formatter of the row
    ("Steps", 10, lambda r: f"{r['steps']:,}"),
    ("SPS", 5, lambda r: f"{r['sps']:.0f}"),
    # Whole words: "eps" beside "Eps" read alike (epsilon? episodes?).
    ("Epsilon", 7, lambda r: f"{r['epsilon']:.3f}"),
    ("Episodes", 8, lambda r: f"{r['episodes']}"),
    ("Score100", 9, lambda r: _num(r["score_mean100"], ".1f")),
    ("Loss", 8, lambda r: _num(r["loss"], ".4f")),
    ("Agree%", 6, lambda r: _num(r["agree"], ".1f")),
    ("Greedy n/Z/F/FZ %", 17, lambda r: format_buttons(r["greedy_dist"])),
    ("Replay n/Z/F/FZ %", 17, lambda r: format_buttons(r["replay_dist"])),
    ("Q min/mean/max", 20, lambda r: "-" if r["q_min"] is None else
     f"{r['q_min']:.2f}/{r['q_mean']:.2f}/{r['q_max']:.2f}"),
    ("GradNorm", 8, lambda r: _num(r["grad_norm"], ".3g")),
    ("ClipΔ", 5, lambda r: _num(r["clip_delta"], ".2f")),
    ("TDclip%", 7, lambda r: _num(None if r["td_clip_frac"] is None
                                  else 100 * r["td_clip_frac"], ".1f")),
    ("TgtAge", 6, lambda r: f"{r['target_age']}"),
)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """"1 episode", "2 episodes", "1,000 steps"; `plural` where adding an s is wrong."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def _num(v, spec: str) -> str:
    if v is None:
        return "-"
    return f"{v:{spec}}" if math.isfinite(v) else str(v)


def header() -> str:
    return " ".join(f"{h:>{w}}" for h, w, _ in _COLUMNS)


def format_row(row: dict) -> str:
    return " ".join(f"{f(row):>{w}}" for _, w, f in _COLUMNS)


def _json_safe(obj):
    """NaN/Inf are not JSON: write them as strings ("nan", "inf") so every line parses."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def cut_partial_line(path: Path) -> int:
    """Truncate `path` after its last newline; return how many bytes were cut (0: none).

    A writer killed mid-append (kill -9) can leave a last line without its newline. Appending
    to it would glue the next row onto it: one corrupt line in the middle of the file, which
    readers (plot) rightly refuse. Only a missing newline at the very end is repaired.
    """
    try:
        f = open(path, "rb+")
    except FileNotFoundError:
        return 0
    with f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return 0
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return 0
        pos = end
        while pos > 0:  # back to the last newline, a chunk at a time
            start = max(0, pos - 65536)
            f.seek(start)
            newline = f.read(pos - start).rfind(b"\n")
            if newline >= 0:
                f.truncate(start + newline + 1)
                return end - (start + newline + 1)
            pos = start
        f.truncate(0)
        return end


class Reporter:
    """Writes rows and events of one run; prints them; draws the progress line on a terminal."""

    def __init__(self, run_dir: Path, total_steps: int, out=None, tensorboard: bool = True,
                 learning_starts: int = 0):
        self.run_dir = Path(run_dir)
        self.total = total_steps
        self.learning_starts = learning_starts  # warm-up steps: the ETA skips them
        self._learning_from: tuple[float, int] | None = None  # (monotonic time, steps)
        self.out = out or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        cut = cut_partial_line(self.run_dir / "metrics.jsonl")
        self._metrics = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        self._tensorboard = tensorboard
        self._tb = EventWriter(self.run_dir) if tensorboard else None
        self._rows = 0
        self._progress_at = 0.0
        self._progress_shown = False
        if cut:
            self.print(f"metrics.jsonl: dropped a partial last line ({cut} bytes) left by a "
                       f"run that was killed while writing it")

    def print(self, text: str) -> None:
        self._clear_progress()
        print(text, file=self.out, flush=True)

    def row(self, row: dict) -> None:
        """A diagnostics row: metrics.jsonl, TensorBoard, and a table line."""
        self._write(row)
        if self._tensorboard:
            scalars = {k: v for k, v in row.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)
                       and k not in ("time", "steps")}
            for name in ("greedy_dist", "replay_dist"):
                if row.get(name):
                    scalars.update({f"{name}/{k}": v for k, v in row[name].items()})
            for name in ("actor_sps", "weights_age"):  # a Ray run's rows: one per actor
                scalars.update({f"{name}/{i}": v for i, v in enumerate(row.get(name) or ())
                                if v is not None})
            try:
                if self._tb is None or self._tb.closed:  # reopened after close(): a new file
                    self._tb = EventWriter(self.run_dir)
                self._tb.add_scalars(row["steps"], scalars)
            except OSError as exc:
                self._tensorboard_failed(exc)
        if self._rows % 20 == 0:
            self.print(header())
        self._rows += 1
        self.print(format_row(row))

    def event(self, event: str, message: str, **fields) -> None:
        """An event row (divergence, rollback, checkpoint, ...) and a line on the terminal."""
        self._write({"event": event, "time": time.time(), **fields, "message": message})
        self.print(f"[{event}] {message}")

    _metrics_failed = False
    """metrics.jsonl could not be written once (a full disk): said once on the terminal."""

    def _write(self, obj: dict) -> None:
        """Append one line to metrics.jsonl. A failed write (a full disk) is said once on the
        terminal and that line is skipped, not raised: the run goes on, its checkpoints are what
        a resume needs, and the terminal still shows every row and event. The file is cut back
        to its last whole line, so a later write (once there is space) starts a line of its own
        and every line still parses."""
        line = json.dumps(_json_safe(obj)) + "\n"
        end = None
        try:
            if self._metrics.closed:  # written to again after close() or a failed write: append
                self._metrics = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
            end = os.fstat(self._metrics.fileno()).st_size  # every earlier line is flushed
            self._metrics.write(line)
            self._metrics.flush()
        except OSError as exc:
            try:
                self._metrics.close()  # drops what could not be flushed (the fd is closed)
            except OSError:
                pass
            if end is not None:
                try:
                    os.truncate(self.run_dir / "metrics.jsonl", end)
                except OSError:
                    pass
            if not self._metrics_failed:
                self._metrics_failed = True
                self.print(f"[write_failed] could not write {self.run_dir / 'metrics.jsonl'}: "
                           f"{exc}; rows that cannot be written there are skipped (they still "
                           f"print here); checkpoints go on as configured")

    def _tensorboard_failed(self, exc: OSError) -> None:
        """A TensorBoard write failed (a full disk): said on the terminal, and no more event
        files this run; metrics.jsonl holds the same rows. Not retried, because each new try
        would start one more (empty) event file."""
        self._tensorboard = False
        try:
            if self._tb is not None:
                self._tb.close()
        except OSError:
            pass
        self._tb = None
        self.print(f"[write_failed] could not write TensorBoard events in {self.run_dir}: "
                   f"{exc}; TensorBoard output is off for the rest of this run "
                   f"(metrics.jsonl has every row)")

    def progress(self, steps: int, sps: float, force: bool = False) -> None:
        """Redraw the progress line (terminal only, at most 4 times a second)."""
        now = time.monotonic()
        if self._learning_from is None and steps >= self.learning_starts:
            self._learning_from = (now, steps)
        if not self.tty or (not force and now - self._progress_at < 0.25):
            return
        self._progress_at = now
        frac = min(steps / self.total, 1.0)
        bar = "#" * int(30 * frac)
        self.out.write(f"\r[{bar:<30}] {100 * frac:5.1f}% {steps:,}/{self.total:,} steps "
                       f"{sps:6.0f} SPS  ETA {self._eta(steps, now)}\x1b[K")
        self.out.flush()
        self._progress_shown = True

    def _eta(self, steps: int, now: float) -> str:
        """Time left at the learning phase's mean speed since it began. Not the warm-up's:
        without updates it runs several times faster, and an ETA from it is far too short."""
        if self._learning_from is None:
            return "after warm-up"
        t0, s0 = self._learning_from
        rate = (steps - s0) / (now - t0) if now > t0 else 0.0
        return _duration((self.total - steps) / rate if rate > 0 else float("inf"))

    def _clear_progress(self) -> None:
        if self._progress_shown:
            self.out.write("\r\x1b[K")
            self._progress_shown = False

    def close(self) -> None:
        self._clear_progress()
        self._metrics.close()
        if self._tb is not None:
            self._tb.close()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
