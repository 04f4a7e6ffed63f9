"""Files that appear complete or not at all, and the clean-up of what a killed writer left.

Every file a run or a command writes for a reader (checkpoints, index.json, status.json,
config.toml, evaluation JSON, plots, videos) goes through here: it is written under a hidden
temporary name beside its target, flushed, fsync'd and renamed over the target, so a crash or a
full disk mid-write leaves the previous file as it was.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)(\.[A-Za-z0-9]+)?$")
"""A temporary name: `.<target name>.tmp-<writer pid>`, optionally followed by the target's
extension (OpenCV picks a video's format by its file name)."""


class WriteError(OSError):
    """A file could not be written; the message names it, and the previous file is untouched."""


def temp_name(path: Path, keep_suffix: bool = False) -> Path:
    """The hidden name beside `path` that this process writes before renaming it over `path`."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix if keep_suffix else ''}")


def atomic_write(path: Path, write: Callable, error: type[Exception] = WriteError) -> None:
    """Write `path` through `write(file)` so that it appears complete or not at all.

    An OSError or RuntimeError (disk full, permissions, torch's writer) is raised as `error`
    with a message naming the file; anything else (KeyboardInterrupt) propagates as it is.
    Either way the temporary file is gone and the previous `path` is untouched.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError)):
            raise error(f"could not write {path}: {exc}; the previous files in "
                        f"{path.parent} are untouched") from exc
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where the file system cannot)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal still exists)."""
    if pid <= 0:  # 0 and negative pids name process groups for os.kill
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    return True


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete the temporary files of writers that are dead.

    A process killed mid-write (kill -9, OOM killer, power loss) leaves its temporary file
    behind: never visible under the final name, but a checkpoint's worth of disk each time. A
    file whose writer pid is alive is left alone: it may be a write in flight (of this process
    or another), or the pid was reused, and then the file waits for a later clean-up.
    """
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _TEMP_NAME.match(name)
        if m is None or pid_alive(int(m[1])):
            continue
        try:
            (Path(directory) / name).unlink()
        except OSError:  # gone already, or not ours to delete: harmless either way
            continue
        removed.append(Path(directory) / name)
    return removed
