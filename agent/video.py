"""Play's recordings: the MP4 and GIF writers.

Each writes under `agent.files.temp_name` (a hidden name beside the target, with the target's
extension: OpenCV picks the format by it) and renames the file over the target only once it is
complete, so a failed or interrupted recording never leaves half a file nor spoils an existing
one. A killed play's leftover temporary files are removed (`agent.files.remove_stale_temps`)
when the next recording into that directory starts.

Both take the error class to raise (play passes its PlayError), as `agent.outputs` does.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from agent.files import remove_stale_temps, temp_name

GIF_MAX_BYTES = 256 * 2**20
"""Memory a GIF's frames may hold (all frames must be in memory for `cv2.imwriteanimation`).
A longer playback is thinned: every other kept frame is dropped and the durations double, so the
GIF still covers the whole playback at a lower frame rate. A full-rate long game needs --video."""
GIF_MIN_MS = 20
"""Shortest GIF frame duration: GIF counts in 10 ms units and browsers show delays under 20 ms
as 100 ms, so faster playback drops frames instead."""
GIF_END_HOLD_MS = 1000
"""How long a GIF holds its last frame (the end of the game) before it loops."""


class VideoSink:
    """MP4 (MPEG-4 Part 2, "mp4v") via cv2.VideoWriter, opened on the first frame (its size).
    `add` only reads the frame: the caller may reuse its buffer."""

    def __init__(self, path: Path, fps: float, error: type[Exception] = ValueError):
        self.path, self.fps, self.error = Path(path), fps, error
        remove_stale_temps(self.path.parent)
        self.tmp = temp_name(self.path, keep_suffix=True)
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0

    def add(self, frame: np.ndarray) -> None:
        if self.writer is None:
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                          self.fps, (w, h))
            if not self.writer.isOpened():
                self.abort()
                raise self.error(f"cannot write video {str(self.path)!r}: OpenCV's VideoWriter "
                                 f"did not open an mp4v encoder ({w}x{h} at {self.fps:g} fps); "
                                 "this OpenCV build may lack FFMPEG; try --gif")
        self.writer.write(frame)
        self.frames += 1

    def finish(self) -> None:
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        if not self.tmp.is_file() or self.tmp.stat().st_size == 0:
            self.abort()
            raise self.error(f"writing video {str(self.path)!r} failed: the encoder produced "
                             "no data")
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)


class GifSink:
    """An animated GIF via cv2.imwriteanimation. Frames are kept in memory (the API takes them
    all at once) within GIF_MAX_BYTES: past it, every other frame goes and durations double.
    `add` keeps the frame it is given: pass a copy of a reused buffer."""

    def __init__(self, path: Path, step_ms: float, error: type[Exception] = ValueError):
        self.path, self.step_ms, self.error = Path(path), step_ms, error
        self.stride = max(1, math.ceil(GIF_MIN_MS / step_ms))
        self.frames: list[np.ndarray] = []
        self.seen = 0
        self.last: np.ndarray | None = None
        self.cap: int | None = None

    def add(self, frame: np.ndarray) -> None:
        if self.cap is None:
            self.cap = max(16, GIF_MAX_BYTES // frame.nbytes)
        if self.seen % self.stride == 0:
            self.frames.append(frame)
        self.last = frame
        self.seen += 1
        if len(self.frames) >= self.cap:
            self.frames = self.frames[::2]
            self.stride *= 2

    def durations(self) -> list[int]:
        ms = max(GIF_MIN_MS, int(round(self.step_ms * self.stride / 10)) * 10)
        out = [ms] * len(self.frames)
        out[-1] = max(ms, GIF_END_HOLD_MS)
        return out

    def finish(self) -> None:
        if not self.frames:
            return
        if self.frames[-1] is not self.last:
            self.frames.append(self.last)  # always end on the game's last frame
        anim = cv2.Animation()
        anim.frames = self.frames
        anim.durations = self.durations()
        anim.loop_count = 0  # loop forever
        remove_stale_temps(self.path.parent)
        tmp = temp_name(self.path, keep_suffix=True)
        try:
            ok = cv2.imwriteanimation(str(tmp), anim)
            if not ok or not tmp.is_file():
                raise self.error(f"writing GIF {str(self.path)!r} failed "
                                 "(cv2.imwriteanimation returned False)")
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
            self.frames = []

    def abort(self) -> None:
        self.frames = []  # nothing on disk until finish()
