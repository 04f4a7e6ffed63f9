"""Files the commands write (recordings, plots, JSON): checked before any work starts, so a long
playback, plot or evaluation never ends in a path it cannot write."""

from __future__ import annotations

import os
from pathlib import Path


def check_output(path: Path | str, suffix: str | None, what: str,
                 error: type[ValueError] = ValueError) -> Path:
    """`path` as a Path if a file (ending in `suffix`, when given) can be written there; else
    `error` naming the path and why. `what` names the file in the message ("video", "--json")."""
    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise error(f"{what} file {str(path)!r} must end in {suffix} "
                    f"(got {path.suffix or 'no extension'!r})")
    parent = path.parent
    if not parent.is_dir():
        raise error(f"{what} file {str(path)!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{what} file {str(path)!r}: directory {str(parent)!r} is not writable")
    if path.is_dir():
        name = f"a {suffix} file" if suffix else "a file in it"
        raise error(f"{what} file {str(path)!r} is a directory; name {name}")
    if path.exists() and not os.access(path, os.W_OK):
        raise error(f"{what} file {str(path)!r} exists and is not writable")
    return path
