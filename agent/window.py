"""Play's live window: the display check, pacing at the game's speed, and the keys.

Keys (`Controls.on_key`, pure so it can be tested): space pause/resume, n or . one step while
paused, + / - double / halve the speed (within SPEED_MIN..SPEED_MAX), q or Esc quit; closing the
window quits too. Quitting raises `Quit` out of `Window.show`: a clean end, not a failure.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from agent.overlay import FONT, FONT_PX, TITLE, text_width

SPEED_MIN, SPEED_MAX = 1e-3, 1e3
"""Playback speed bounds (1 = real game speed; the CLI's --speed range); the +/- keys stay
inside them."""
KEYS_HELP = "space pause/resume, n step, +/- speed, q quit"


def check_display(error: type[Exception] = ValueError) -> None:
    """`error` unless an X display is reachable: Qt aborts the whole process when it is not.
    OpenCV's Qt build speaks only X11 (xcb); Wayland desktops serve it through XWayland."""
    display = os.environ.get("DISPLAY", "")
    if not display:
        raise error("a live window needs an X display, but DISPLAY is not set; write a "
                    "video instead (--video FILE.mp4)")
    local = display[1:].split(".")[0] if display.startswith(":") else ""
    if local.isdigit() and not Path(f"/tmp/.X11-unix/X{local}").exists():
        raise error(f"DISPLAY={display!r} names no running X server (no socket "
                    f"/tmp/.X11-unix/X{local}); start one or use --video FILE.mp4")


def has_display() -> bool:
    """Whether `check_display` passes: the CLI opens a window only then."""
    try:
        check_display()
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Controls:
    """The live window's state; `on_key` is the whole key map."""

    paused: bool = False
    speed: float = 1.0
    step: bool = False
    """One step was asked for while paused."""
    quit: bool = False

    def on_key(self, key: int) -> Controls:
        """The state after `key` (a cv2.waitKey code; -1 = no key)."""
        if key < 0:
            return self
        ch = chr(key & 0xFF)
        if ch in ("q", "Q", "\x1b"):
            return replace(self, quit=True)
        if ch == " ":
            return replace(self, paused=not self.paused, step=False)
        if ch in ("n", "N", ".") and self.paused:
            return replace(self, step=True)
        if ch in ("+", "="):  # "=" is "+" without shift
            return replace(self, speed=min(SPEED_MAX, self.speed * 2))
        if ch in ("-", "_"):
            return replace(self, speed=max(SPEED_MIN, self.speed / 2))
        return self

    def stepped(self) -> Controls:
        return replace(self, step=False)


class Quit(Exception):
    """The viewer asked to stop (q, Esc or closing the window)."""


class Window:
    """A live OpenCV window paced at `step_s / speed` seconds per agent step."""

    def __init__(self, title: str, step_s: float, speed: float):
        self.name = title
        self.step_s = step_s
        self.controls = Controls(speed=speed)
        self.deadline: float | None = None
        # OpenCV's Qt ships no fonts and says so on every start; the overlay's text is drawn
        # by OpenCV, not Qt, so that warning is noise. A user's own rules are left alone.
        os.environ.setdefault("QT_LOGGING_RULES", "default.warning=false")
        cv2.namedWindow(self.name, cv2.WINDOW_AUTOSIZE)
        self._retitle()

    def _retitle(self) -> None:
        c = self.controls
        state = "PAUSED" if c.paused else f"{c.speed:g}x"
        cv2.setWindowTitle(self.name, f"{self.name} | {state} | {KEYS_HELP}")

    def _closed(self) -> bool:
        return cv2.getWindowProperty(self.name, cv2.WND_PROP_VISIBLE) < 1

    def show(self, frame: np.ndarray, screen_width: int) -> None:
        """Show `frame` and return when the next step is due (or stepped to); Quit on quit."""
        cv2.imshow(self.name, _paused(frame, screen_width) if self.controls.paused else frame)
        now = time.perf_counter()
        self.deadline = max(now, (self.deadline or now) + self.step_s / self.controls.speed)
        while True:
            c = self.controls
            wait = 0.05 if c.paused else min(0.05, self.deadline - time.perf_counter())
            key = cv2.waitKey(max(1, int(wait * 1000)))
            new = c.on_key(key)
            if new.quit or self._closed():
                raise Quit
            if new != c:
                self.controls = new
                self._retitle()
                if new.paused != c.paused:
                    cv2.imshow(self.name, _paused(frame, screen_width) if new.paused else frame)
                    self.deadline = time.perf_counter()  # resume at once
            if self.controls.paused:
                if self.controls.step:
                    self.controls = self.controls.stepped()
                    return
                continue
            if time.perf_counter() >= self.deadline:
                return

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.name)
            cv2.waitKey(1)  # lets the GUI process the close
        except cv2.error:
            pass  # already gone (closed by the viewer)


def _paused(frame: np.ndarray, width: int) -> np.ndarray:
    """`frame` with a PAUSED banner across the bottom of its first `width` columns (the game
    screen: the panel's rows stay readable while paused)."""
    shown = frame.copy()
    text = "PAUSED  space: resume  n: one step"
    h = max(16, frame.shape[0] // 24)
    font = min(h / FONT_PX * 1.2, 0.9 * width / text_width(text, 1.0))
    band = shown[frame.shape[0] - h - 8:, :width]
    band[:] = band // 4
    cv2.putText(shown, text, (6, frame.shape[0] - 8), FONT, font, TITLE, 1, cv2.LINE_AA)
    return shown
