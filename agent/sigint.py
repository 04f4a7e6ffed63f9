"""Ctrl-C held over a block that must not be cut in half."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) until the block is done, then raise KeyboardInterrupt.

    For blocks where an interrupt does harm rather than stop work: a C++ extension's import
    (ale-py and torch are pybind11 modules; a KeyboardInterrupt thrown inside their module
    init aborted the process with `terminate called ... error_already_set`), or a process
    pool's `submit` (a worker forked but not yet recorded by the pool would be left running).
    Only the main thread can set signal handlers; elsewhere this holds nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        # (None: a handler not set from Python; Python's own is the one to restore)
        signal.signal(signal.SIGINT,
                      previous if previous is not None else signal.default_int_handler)
        if caught:
            raise KeyboardInterrupt
