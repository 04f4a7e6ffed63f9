"""Anonymous shared memory as a numpy array, for arrays that worker processes write into.

`SharedArray(shape, dtype)` maps memory that no name refers to: on Linux a `memfd_create` file
(it lives only as long as some process holds it open or mapped), elsewhere a file created in
/dev/shm (else tempfile's directory) and unlinked at once. Either way nothing is left on disk or
in /dev/shm, whatever way the processes end (on Linux nothing ever has a name; the fallback's
file has one for the microseconds between its creation and its unlink, the window that
`multiprocessing.heap.Arena` has too), and the memory is freed by the kernel once the last
process that maps it (or holds its descriptor) is gone.

No page is touched up front: the file is sized with ftruncate and mapped, so a page costs memory
only once something writes it (a 7 GB replay ring that fills over hours costs nothing at
start). A memfd is not limited by the size of /dev/shm (64 MB in a default Docker container);
the fallback file is created only in a directory whose file system has room for the whole array
(it could not be filled otherwise: a write to a page past the room left is a SIGBUS).

Pickling passes the file descriptor, not the contents (as `multiprocessing.heap.Arena` does,
through `multiprocessing.reduction.DupFd`): a SharedArray given to a `multiprocessing.Process`
(start method "forkserver", "spawn" or "fork"), or sent through a multiprocessing pipe or queue,
maps the same memory in the receiving process, so what one process writes the others read.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import weakref
from multiprocessing import reduction

import numpy as np

__all__ = ["SharedArray"]


def _anonymous_file(size: int) -> int:
    """A descriptor of a new file of `size` bytes that no path names (none of it allocated)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("atari-agent-shared-array", os.MFD_CLOEXEC)
    else:  # not Linux (a test takes memfd_create away)
        fd = _unlinked_file(size)
    try:
        os.ftruncate(fd, size)  # a hole: pages are allocated when first written
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlinked_file(size: int) -> int:
    """A file created in /dev/shm (else tempfile's directory) with room for `size` bytes, its
    name removed at once: only the returned descriptor (and the mappings of it) keep it."""
    tried = []
    for directory in ("/dev/shm", tempfile.gettempdir()):
        try:
            stats = os.statvfs(directory)
        except OSError:
            continue
        if stats.f_bavail * stats.f_frsize < size:
            tried.append(f"{directory} ({stats.f_bavail * stats.f_frsize} bytes free)")
            continue
        fd, path = tempfile.mkstemp(prefix="atari-agent-shm-", dir=directory)
        os.unlink(path)
        return fd
    raise OSError(f"no directory has room for a shared array of {size} bytes: "
                  f"{', '.join(tried) or 'none of /dev/shm and the temp directory exists'}")


class SharedArray:
    """An anonymous shared-memory numpy array (see the module docstring); ``.array`` is it.

    Memory from a fresh SharedArray reads as zeros (untouched pages); nothing is written to it
    at creation. Pickle it (or pass it to a `multiprocessing.Process`) to map the same memory
    in another process; each process's copy is its own object with its own `close()`.
    """

    def __init__(self, shape, dtype):
        shape, dtype = _checked(shape, dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        fd = _anonymous_file(max(nbytes, 1))  # (mmap refuses 0 bytes)
        try:
            self._attach(fd, shape, dtype)
        except BaseException:
            os.close(fd)
            raise

    def _attach(self, fd: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        mapping = mmap.mmap(fd, max(nbytes, 1))  # MAP_SHARED, read and write; touches nothing
        array = np.frombuffer(mapping, dtype, count=nbytes // dtype.itemsize).reshape(shape)
        self.shape, self.dtype, self.nbytes = shape, dtype, nbytes
        self._mmap, self._array, self._fd = mapping, array, fd
        self._closer = weakref.finalize(self, os.close, fd)  # unclosed: the fd goes with it

    @classmethod
    def _rebuild(cls, shape: tuple[int, ...], dtype: str, dupfd) -> SharedArray:
        """The receiving side of a pickle: map the descriptor that came with it."""
        self = cls.__new__(cls)
        fd = dupfd.detach()
        try:
            self._attach(fd, shape, np.dtype(dtype))
        except BaseException:
            os.close(fd)
            raise
        return self

    def __reduce__(self):
        if self._fd < 0:
            raise ValueError("a closed SharedArray cannot be pickled")
        return SharedArray._rebuild, (self.shape, self.dtype.str, reduction.DupFd(self._fd))

    @property
    def array(self) -> np.ndarray:
        """The numpy array on the shared memory (the same object at every access)."""
        if self._array is None:
            raise ValueError("this SharedArray is closed")
        return self._array

    @property
    def closed(self) -> bool:
        return self._array is None

    def close(self) -> None:
        """Let go of the memory in this process; idempotent. Other processes keep theirs.

        Closes the descriptor and drops `.array`; the mapping is removed now if no numpy view
        of it (`.array` or anything sliced from it) is still alive here, else when the last of
        them is garbage-collected: a view taken before close() stays valid (never a dangling
        pointer). The kernel frees the memory once no process maps it or holds its descriptor.
        """
        self._fd = -1
        self._array = None
        closer = getattr(self, "_closer", None)
        if closer is not None:
            closer()  # closes the descriptor once
        mapping = getattr(self, "_mmap", None)
        if mapping is not None:
            try:
                mapping.close()  # refused while a view exports its buffer
            except BufferError:
                pass  # unmapped by the mmap object's own finalizer, after the last view
            self._mmap = None

    def __enter__(self) -> SharedArray:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ", closed" if self.closed else ""
        return f"SharedArray(shape={self.shape}, dtype={self.dtype}{state})"


def _checked(shape, dtype) -> tuple[tuple[int, ...], np.dtype]:
    given = shape
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        items = tuple(shape)
    except TypeError:
        items = None
    if items is None or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                and s >= 0 for s in items):
        raise ValueError(f"shape must be a tuple of non-negative ints, got {given!r}")
    shape = tuple(int(s) for s in items)
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype must be a numpy dtype, got {dtype!r}") from exc
    if dtype.hasobject:
        raise ValueError(f"dtype must hold no Python objects, got {dtype}")
    return shape, dtype

