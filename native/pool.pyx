# The worker pool's shared-memory words (agent/workers.py, "Waiting" in its docstring): the
# doorbells, the sleep flags and the full fence of the wake protocol, the spin-waits (without the
# GIL), and the per-step scalars (a row stored by its env's process, all rows copied out into
# new arrays by the parent).
#
# Words. The pool's block holds two rows of int64 words per env, one 64-byte cache line each, so
# that every line has a single writer:
#   cmd row i (written by the parent):  [0] the command word: seq << 32 | command << 24 | action
#                                        [1] the parent's sleep flag towards worker i
#                                        [2], [3] the command's ring rows (a VecEnv with a
#                                        replay ring): stored before [0], read after it
#   ack row i (written by worker i):    [0] the ack word: seq << 1 | episode ended
#                                        [1] worker i's sleep flag
# Loads are acquire and stores release (__atomic builtins: plain moves on x86-64, where they
# only keep the compiler from reordering); `fence()` is a sequentially consistent fence (mfence
# on x86-64), the StoreLoad barrier that the Dekker-style sleep/wake handshake needs.

cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy

cnp.import_array()

cdef extern from *:
    """
    #include <sched.h>
    #include <time.h>
    static inline int64_t atari_pool_load(const int64_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void atari_pool_store(int64_t *p, int64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline void atari_pool_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    static inline void atari_pool_relax(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #endif
        sched_yield();
    }
    static inline double atari_pool_now(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
    }
    """
    int64_t atari_pool_load(const int64_t *p) noexcept nogil
    void atari_pool_store(int64_t *p, int64_t v) noexcept nogil
    void atari_pool_fence() noexcept nogil
    void atari_pool_relax() noexcept nogil
    double atari_pool_now() noexcept nogil

cdef enum:
    ROW = 8  # int64 words per row: one 64-byte cache line


def fence():
    """A full (sequentially consistent) memory fence."""
    atari_pool_fence()


cdef class PoolBlock:
    """Raw access to the pool's shared words and per-step scalars, for one process.

    cmd_rows, ack_rows: (N, 8) int64, C-contiguous; rewards: (2, N) float32; flags: (4, N) bool
    (views on the shared block). `first` is the env index of the first worker: the parent's
    methods (`ring`, `wait_acks`) cover envs first..N-1; a worker's (`wait_command`,
    `publish`) take its own index. `asleep` says whether this process's sleep flag is set.
    """

    cdef int64_t *cmd
    cdef int64_t *ack
    cdef float *rewards
    cdef uint8_t *flags
    cdef Py_ssize_t n, first
    cdef bint _asleep
    cdef object _keep

    def __init__(self, cmd_rows, ack_rows, rewards, flags, Py_ssize_t first=0):
        cdef int64_t[:, ::1] c = cmd_rows
        cdef int64_t[:, ::1] a = ack_rows
        cdef float[:, ::1] r = rewards
        cdef uint8_t[:, ::1] f = flags.view("u1")
        n = c.shape[0]
        if c.shape[1] != ROW or a.shape[0] != n or a.shape[1] != ROW:
            raise ValueError(f"cmd_rows and ack_rows must be ({n}, {ROW}) int64")
        if r.shape[0] != 2 or r.shape[1] != n or f.shape[0] != 4 or f.shape[1] != n:
            raise ValueError(f"rewards must be (2, {n}) float32 and flags (4, {n}) bool")
        if not 0 <= first <= n:
            raise ValueError(f"first must be in [0, {n}], got {first}")
        self.cmd, self.ack = &c[0, 0], &a[0, 0]
        self.rewards, self.flags = &r[0, 0], &f[0, 0]
        self.n, self.first = n, first
        self._asleep = False
        self._keep = (cmd_rows, ack_rows, rewards, flags)  # the memory stays mapped

    @property
    def asleep(self) -> bool:
        return self._asleep

    # ------------------------------------------------------------------ the step's scalars
    def store_step(self, Py_ssize_t i, s) -> bool:
        """Write Step `s` into row i of rewards (reward, raw_reward) and flags (terminated,
        truncated, life_lost, learn_terminal); returns terminated or truncated."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        cdef float reward = s.reward, raw = s.raw_reward
        cdef bint terminated = s.terminated, truncated = s.truncated
        cdef bint life_lost = s.life_lost, learn_terminal = s.learn_terminal
        cdef Py_ssize_t n = self.n
        self.rewards[i] = reward
        self.rewards[n + i] = raw
        self.flags[i] = terminated
        self.flags[n + i] = truncated
        self.flags[2 * n + i] = life_lost
        self.flags[3 * n + i] = learn_terminal
        return terminated or truncated

    def results(self):
        """New copies of the six per-step rows, (N,) each: reward, raw_reward (float32),
        terminated, truncated, life_lost, learn_terminal (bool)."""
        cdef cnp.npy_intp size = self.n
        cdef object r0 = cnp.PyArray_SimpleNew(1, &size, cnp.NPY_FLOAT32)
        cdef object r1 = cnp.PyArray_SimpleNew(1, &size, cnp.NPY_FLOAT32)
        cdef object f0 = cnp.PyArray_SimpleNew(1, &size, cnp.NPY_BOOL)
        cdef object f1 = cnp.PyArray_SimpleNew(1, &size, cnp.NPY_BOOL)
        cdef object f2 = cnp.PyArray_SimpleNew(1, &size, cnp.NPY_BOOL)
        cdef object f3 = cnp.PyArray_SimpleNew(1, &size, cnp.NPY_BOOL)
        memcpy(cnp.PyArray_DATA(<cnp.ndarray>r0), self.rewards, size * sizeof(float))
        memcpy(cnp.PyArray_DATA(<cnp.ndarray>r1), self.rewards + size, size * sizeof(float))
        memcpy(cnp.PyArray_DATA(<cnp.ndarray>f0), self.flags, size)
        memcpy(cnp.PyArray_DATA(<cnp.ndarray>f1), self.flags + size, size)
        memcpy(cnp.PyArray_DATA(<cnp.ndarray>f2), self.flags + 2 * size, size)
        memcpy(cnp.PyArray_DATA(<cnp.ndarray>f3), self.flags + 3 * size, size)
        return r0, r1, f0, f1, f2, f3

    # ------------------------------------------------------------------ the parent's side
    def ring(self, int64_t base, list acts=None, list slots=None) -> int:
        """Store every worker's command word (base | acts[i], or base alone when `acts` is
        None), then a full fence, then read the workers' sleep flags: returns how many are set
        (those workers must be woken through their pipes; `sleeping(i)` says which).

        `slots` (2N ints, or None): worker i's two ring rows, slots[2i] and slots[2i + 1],
        stored in words 2 and 3 of its command row before its command word (a release store:
        the worker that sees the word sees them; `slots(i)` reads them)."""
        cdef Py_ssize_t i
        cdef int sleepers = 0
        cdef int64_t *row
        if acts is not None and len(acts) < self.n:
            raise ValueError(f"acts must have {self.n} items")
        if slots is not None and len(slots) < 2 * self.n:
            raise ValueError(f"slots must have {2 * self.n} items")
        for i in range(self.first, self.n):
            row = self.cmd + i * ROW
            if slots is not None:
                atari_pool_store(row + 2, <int64_t>slots[2 * i])
                atari_pool_store(row + 3, <int64_t>slots[2 * i + 1])
            if acts is None:
                atari_pool_store(row, base)
            else:
                atari_pool_store(row, base | <int64_t>acts[i])
        atari_pool_fence()
        for i in range(self.first, self.n):
            sleepers += atari_pool_load(self.ack + i * ROW + 1) != 0
        return sleepers

    def sleeping(self, Py_ssize_t i) -> bool:
        """Worker i's sleep flag."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        return atari_pool_load(self.ack + i * ROW + 1) != 0

    def acked(self, Py_ssize_t i, int64_t seq) -> bool:
        """Whether worker i's ack word answers command `seq`."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        return atari_pool_load(self.ack + i * ROW) >> 1 == seq

    def ended(self, Py_ssize_t i) -> bool:
        """The "episode ended" bit of worker i's ack word."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        return atari_pool_load(self.ack + i * ROW) & 1 != 0

    cdef inline int _scan(self, int64_t seq) noexcept nogil:
        cdef Py_ssize_t i
        cdef int64_t word
        cdef int ended = 0
        for i in range(self.first, self.n):
            word = atari_pool_load(self.ack + i * ROW)
            if word >> 1 != seq:
                return -1
            ended += <int>(word & 1)
        return ended

    cdef inline void _flag_workers(self, int64_t value) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(self.first, self.n):
            atari_pool_store(self.cmd + i * ROW + 1, value)

    def wait_acks(self, int64_t seq, double spin) -> int:
        """Wait for every worker's ack of command `seq`: look, yielding the CPU between looks,
        for up to `spin` seconds; then set the parent's sleep flags, fence and look once more.
        Returns the number of episodes that ended (>= 0) once every worker answered (the
        flags cleared), or -1 with the flags left set: the caller then sleeps on the pipes
        (a worker that acks now sees the flag and writes a wake message) and calls again,
        with spin 0, whenever it wakes. Runs without the GIL."""
        cdef int64_t result
        with nogil:
            result = self._wait(True, 0, seq, spin)
        return result

    # ------------------------------------------------------------------ waiting, either side
    cdef inline int64_t _look(self, bint parent, Py_ssize_t i, int64_t target) noexcept nogil:
        """The parent: the number of ended episodes once every worker acked command `target`;
        worker i: its command word once it carries number `target`; else -1 (command words
        are >= 0: a sequence number below 2**31 in bits 32..62)."""
        cdef int64_t value
        if parent:
            return self._scan(target)
        value = atari_pool_load(self.cmd + i * ROW)
        return value if value >> 32 == target else -1

    cdef inline void _flag(self, bint parent, Py_ssize_t i, int64_t value) noexcept nogil:
        """Set (1) or clear (0) this side's sleep flag(s): the parent's towards every worker,
        or worker i's."""
        if parent:
            self._flag_workers(value)
        else:
            atari_pool_store(self.ack + i * ROW + 1, value)

    cdef int64_t _wait(self, bint parent, Py_ssize_t i, int64_t target,
                       double spin) noexcept nogil:
        """wait_acks (parent) or wait_command (worker i): spin on `_look`, then flag, fence and
        look once more; -1 with the flag left set when the side must sleep."""
        cdef int64_t result
        cdef double end = -1.0
        while True:
            result = self._look(parent, i, target)
            if result >= 0:
                break
            if self._asleep:
                return -1
            if end < 0.0:
                end = atari_pool_now() + spin
            if atari_pool_now() >= end:
                self._flag(parent, i, 1)
                atari_pool_fence()  # the flag before the last look (StoreLoad)
                self._asleep = True
                continue
            atari_pool_relax()
        if self._asleep:
            self._flag(parent, i, 0)
            self._asleep = False
        return result

    # ------------------------------------------------------------------ a worker's side
    def wait_command(self, Py_ssize_t i, int64_t want, double spin) -> int:
        """Worker i waits for the command numbered `want` (bits 32.. of its command word):
        looks, yielding the CPU between looks, for up to `spin` seconds; then sets its sleep
        flag, fences and looks once more. Returns the command word (flag cleared), or -1 with
        the flag left set: the worker then sleeps on its pipe and calls again, with spin 0,
        whenever a message wakes it. Runs without the GIL."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        cdef int64_t result
        with nogil:
            result = self._wait(False, i, want, spin)
        return result

    def slots(self, Py_ssize_t i):
        """Worker i's ring rows for the command it has seen: words 2 and 3 of its command row,
        as a tuple of two ints (read after the command word, which was stored after them)."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        return atari_pool_load(self.cmd + i * ROW + 2), atari_pool_load(self.cmd + i * ROW + 3)

    def publish(self, Py_ssize_t i, int64_t value) -> bool:
        """Worker i stores its ack word (after its results), fences, and returns the parent's
        sleep flag: True when the parent must be woken through the pipe."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        atari_pool_store(self.ack + i * ROW, value)
        atari_pool_fence()  # the ack before the flag's load (StoreLoad)
        return atari_pool_load(self.cmd + i * ROW + 1) != 0
