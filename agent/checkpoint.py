"""Checkpoints: atomic writes, safe loads, layout checks, and which files a run keeps.

A checkpoint is one `torch.save` file holding only tensors and plain data (dicts, lists, str,
numbers), so it loads with `torch.load(..., weights_only=True)`: no pickled code can run.
It is written to a temporary file in the same directory, flushed, fsync'd and renamed over the
target (then the directory is fsync'd), so a reader only ever sees a complete file: a crash or a
full disk mid-write leaves the previous checkpoint as it was.

Layout of a run's checkpoints/ directory:
- ``ckpt-<steps>.pt``: periodic checkpoints; the last `keep_last` are kept, and never the newest
  healthy one is deleted (a roll-back needs it);
- ``best.pt``: a copy of the checkpoint with the best periodic evaluation score;
- ``replay-<steps>.npz``: the latest replay snapshot (only with run.save_replay), plain arrays
  read with ``allow_pickle=False``;
- ``index.json``: which files exist, their steps, health and evaluation score (rebuilt from
  the files if lost).
"""

from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from agent import files
from agent.files import remove_stale_temps

FORMAT = "atari-agent-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint could not be read, written or used; the message names the file and why."""


def atomic_write(path: Path, write: Callable) -> None:
    """`files.atomic_write` raising CheckpointError (what every checkpoint caller handles)."""
    files.atomic_write(path, write, error=CheckpointError)


def save(path: Path, payload: dict) -> None:
    """Atomically write a checkpoint dict (format and version are added here)."""
    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(Path(path), lambda f: _torch_save(payload, f))


class _WriteErrors:
    """A file wrapper that remembers the OS's write errors (see `_torch_save`)."""

    def __init__(self, file):
        self.file = file
        self.errors: list[OSError] = []

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.errors.append(exc)
            raise

    def flush(self) -> None:
        self.file.flush()


def _torch_save(payload: dict, file) -> None:
    """torch.save, raising the OS's own error when a write fails: torch's zip writer reports a
    full disk as "unexpected pos 704 vs 598", which does not say why; "[Errno 28] No space left
    on device" does."""
    writer = _WriteErrors(file)
    try:
        torch.save(payload, writer)
    except RuntimeError:
        if writer.errors:  # popped: a kept reference would make a cycle through the traceback
            del writer.errors[1:]
            raise writer.errors.pop() from None
        raise


def load(path: Path) -> dict:
    """Read a checkpoint safely, or raise CheckpointError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" if not path.exists()
                              else f"checkpoint {path} is not a file")
    _check_zip_start(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        if "global" in detail.lower():  # a class or function reference: code we never load
            raise CheckpointError(
                f"checkpoint {path} was refused: it references Python objects other than tensors "
                f"and plain data, which are never unpickled here ({detail})") from None
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({detail})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError,
            UnicodeDecodeError, AttributeError, IndexError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt "
                              f"({_first_line(exc)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an atari-agent checkpoint (no {FORMAT!r} marker)")
    if data.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {data.get('version')!r}; "
                              f"this atari-agent reads version {VERSION}")
    return data


_ZIP_MAGIC = b"PK\x03\x04"


def _check_zip_start(path: Path) -> None:
    """Refuse a file that does not start like the zip archive torch.save writes, saying what
    it is, before torch reads it: torch would try it as a legacy pickle and fail with an
    internal error ("IndexError: pop from empty list") that tells the user nothing. Cutting a
    file short keeps its start, so a truncated checkpoint passes here (and torch names it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror})") from None
    if head.startswith(_ZIP_MAGIC):
        return
    if not head:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (an empty file)")
    if _is_text(head):
        raise CheckpointError(f"{path} is not an atari-agent checkpoint (expected a torch.save "
                              f"zip file; this one holds text)")
    raise CheckpointError(f"checkpoint {path} is truncated or corrupt (not a torch.save zip "
                          f"file)")


def _is_text(head: bytes) -> bool:
    """Whether a file's first bytes read as UTF-8 text (a character cut at the end allowed)."""
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def _unpickler_detail(exc: BaseException) -> str:
    """The informative line of torch's long weights_only error (not its boilerplate)."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln.split("WeightsUnpickler error:", 1)[-1].strip() for ln in lines
              if not ln.startswith(boilerplate)]
    useful = [ln for ln in useful if ln]
    return useful[0][:200] if useful else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    """The error's first sentence: torch's zip reader goes on with boilerplate ("This is an
    internal miniz error. If you are seeing this error, ...")."""
    lines = str(exc).strip().splitlines()
    return (f"{type(exc).__name__}: {lines[0].split('. ')[0][:200]}" if lines
            else type(exc).__name__)


def verify(ckpt: dict, path: Path, network: dict | None = None,
           layout: dict | None = None) -> None:
    """Check that a checkpoint fits the network spec and action layout the caller will use."""
    if layout is not None and ckpt.get("layout") != layout:
        have = ckpt.get("layout") or {}
        raise CheckpointError(
            f"checkpoint {path} was trained on {have.get('game')!r} with the {have.get('kind')!r} "
            f"action set {have.get('ale_names')}; this run uses {layout['game']!r} "
            f"{layout['kind']!r} {layout['ale_names']}")
    if network is not None and ckpt.get("network") != network:
        raise CheckpointError(f"checkpoint {path} holds a different network: "
                              f"{ckpt.get('network')} (this run builds {network})")


# ------------------------------------------------------------------------------ plain data
def to_torch(obj):
    """numpy arrays -> tensors, recursively (what weights_only loading accepts)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: to_torch(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_torch(v) for v in obj)
    return obj


def to_numpy(obj):
    """tensors -> numpy arrays, recursively (undoes `to_torch`)."""
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_numpy(v) for v in obj)
    return obj


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"replay snapshot {path} is missing or corrupt "
                              f"({type(exc).__name__}: {exc})") from None


def snapshot_params(path: Path, keys: list[str]) -> dict:
    """The scalar (or small tuple) entries `keys` of a replay snapshot, read without its frames
    (an .npz member is read only when asked for)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {}
            for key in keys:
                if key in data.files:
                    value = data[key]
                    out[key] = value.item() if value.ndim == 0 else tuple(value.tolist())
            return out
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"replay snapshot {path} is missing or corrupt "
                              f"({type(exc).__name__}: {exc})") from None


# ------------------------------------------------------------------------------ retention
class CheckpointStore:
    """The checkpoints/ directory of one run: save, list, prune, find the one to resume from."""

    def __init__(self, run_dir: Path, keep_last: int = 3):
        self.dir = Path(run_dir) / "checkpoints"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last
        # A writer killed mid-write left these: the run's own (status.json, config.toml) too.
        remove_stale_temps(self.dir)
        remove_stale_temps(self.dir.parent)
        self.index = self._read_index()

    # index.json: {"checkpoints": [{"file", "steps", "healthy"}], "best": {...} | None}
    def _read_index(self) -> dict:
        try:
            index = json.loads((self.dir / "index.json").read_text())
            entries = [e for e in index["checkpoints"] if (self.dir / e["file"]).is_file()]
            # A checkpoint renamed into place by a writer killed before it rewrote index.json
            # is complete (atomic_write) and the newest: resuming must not skip it, and the
            # replay snapshot of the older one it supersedes may already have been pruned.
            listed = {e["file"] for e in entries}
            entries += [e for e in map(self._entry, sorted(self.dir.glob("ckpt-*.pt")))
                        if e is not None and e["file"] not in listed]
            best = index.get("best")
            best_file = self.dir / "best.pt"
            if best_file.is_file() and (best is None or best_file.stat().st_mtime_ns >
                                        (self.dir / "index.json").stat().st_mtime_ns):
                # best.pt renamed in by a writer killed before it rewrote index.json: the
                # file's own score counts, or a worse evaluation could later replace it.
                best = self._best_entry()
            return {"checkpoints": entries, "best": best}
        except (OSError, ValueError, KeyError, TypeError):
            return self._rebuild_index()

    @staticmethod
    def _entry(path: Path) -> dict | None:
        """The index entry of a checkpoint file, read from the file (None if unreadable)."""
        try:
            ckpt = load(path)
        except CheckpointError:
            return None
        return {"file": path.name, "steps": int(ckpt["counters"]["steps"]),
                "healthy": bool(ckpt.get("healthy", True))}

    def _rebuild_index(self) -> dict:
        entries = [e for e in map(self._entry, sorted(self.dir.glob("ckpt-*.pt"))) if e]
        return {"checkpoints": entries, "best": self._best_entry()}

    def _best_entry(self) -> dict | None:
        """best.pt's index entry read from the file (None if there is none or it is unreadable)."""
        if not (self.dir / "best.pt").is_file():
            return None
        try:
            ckpt = load(self.dir / "best.pt")
        except CheckpointError:
            return None
        return {"file": "best.pt", "steps": int(ckpt["counters"]["steps"]),
                "eval_score": ckpt.get("eval_score")}

    def _write_index(self) -> None:
        text = json.dumps(self.index, indent=1).encode()
        atomic_write(self.dir / "index.json", lambda f: f.write(text))

    @property
    def entries(self) -> list[dict]:
        return sorted(self.index["checkpoints"], key=lambda e: e["steps"])

    def path(self, entry: dict) -> Path:
        return self.dir / entry["file"]

    def latest(self) -> Path | None:
        entries = self.entries
        return self.path(entries[-1]) if entries else None

    def latest_healthy(self) -> Path | None:
        healthy = [e for e in self.entries if e["healthy"]]
        return self.path(healthy[-1]) if healthy else None

    def save(self, payload: dict, steps: int, healthy: bool,
             replay: dict[str, np.ndarray] | None = None) -> Path:
        """Write ckpt-<steps>.pt (and its replay snapshot first) and index.json, then prune.

        All or nothing: when a write fails (a full disk) the files this call created are deleted
        and the index is left as it was, so no orphan replay snapshot stays behind to take the
        space the next try needs (or to be read as another checkpoint's), and nothing is pruned
        before the index that lists the new checkpoint is on disk: a save that did not complete
        never costs an earlier checkpoint. Raises CheckpointError naming the file and the OS
        error.
        """
        name = f"ckpt-{steps:012d}.pt"
        replay_name = f"replay-{steps:012d}.npz"
        before = self.index
        created = [self.dir / n for n in (name, replay_name if replay is not None else None)
                   if n is not None and not (self.dir / n).exists()]
        try:
            if replay is not None:
                save_arrays(self.dir / replay_name, replay)
                payload = {**payload, "replay_file": replay_name}
            save(self.dir / name, {**payload, "healthy": healthy})
            entries = [e for e in before["checkpoints"] if e["file"] != name]
            entries.append({"file": name, "steps": steps, "healthy": healthy})
            self.index = {**before, "checkpoints": self._kept(entries)}
            self._write_index()
        except CheckpointError:
            self.index = before
            for path in created:
                path.unlink(missing_ok=True)
            raise
        self._prune(before["checkpoints"])
        return self.dir / name

    def save_best(self, payload: dict, steps: int, eval_score: float) -> bool:
        """Keep `payload` as best.pt if its evaluation score beats the best so far."""
        best = self.index.get("best")
        if best is not None and best["eval_score"] is not None and eval_score <= best["eval_score"]:
            return False
        save(self.dir / "best.pt", {**payload, "eval_score": eval_score, "healthy": True})
        self.index["best"] = {"file": "best.pt", "steps": steps, "eval_score": eval_score}
        self._write_index()
        return True

    def _kept(self, entries: list[dict]) -> list[dict]:
        """The last keep_last entries, and the newest healthy one (a roll-back needs it)."""
        entries = sorted(entries, key=lambda e: e["steps"])
        keep = {e["file"] for e in entries[-self.keep_last:]}
        healthy = [e for e in entries if e["healthy"]]
        if healthy:
            keep.add(healthy[-1]["file"])
        return [e for e in entries if e["file"] in keep]

    def _prune(self, previous: list[dict]) -> None:
        """Delete the checkpoints of `previous` that the index (already on disk) dropped."""
        listed = {e["file"] for e in self.index["checkpoints"]}
        for e in previous:
            if e["file"] not in listed:
                (self.dir / e["file"]).unlink(missing_ok=True)
        # Only the newest replay snapshot is worth its size.
        snapshots = sorted(self.dir.glob("replay-*.npz"))
        for old in snapshots[:-1]:
            old.unlink(missing_ok=True)
