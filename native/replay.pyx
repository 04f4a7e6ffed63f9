# Frame-ring replay memory: each preprocessed frame is stored once; observation stacks, n-step
# returns and next observations are gathered at sample time, without the GIL.
#
# Layout. Slot i of a ring of `capacity` slots holds one frame and what happened after it:
#   frame[i]   the newest frame of observation o_t
#   action[i]  the action taken in o_t, reward[i] the (already clipped) reward it earned
#   flags[i]   FIRST (o_t begins an episode), HAS_TRANSITION (action/reward are set),
#              TERMINATED (the step ended the game), TRUNCATED (the step hit a time limit)
# Every episode also writes its final observation into a slot of its own (no transition), so a
# truncated episode still bootstraps from its last observation. Slots are addressed by a logical
# index L (the count of frames written before it); the slot is L % capacity.
#
# Live range. The slot after the newest frame is handed out by frame_slot() for the next write,
# so it is never sampled: live = [max(0, total - capacity + 1), total - 1].
#
# A transition L is valid when it has an action, its stack history (back to the episode's first
# frame, at most stack - 1 frames) is live, and its n-step window is complete: it reaches n steps
# with the bootstrap frame written, or it ends early at a terminal or a truncation.
#
# Snapshots. state_dict() / load_state_dict() save and restore the exact state (frames, per-slot
# fields, counters, priorities and the sampler's RNG) as plain numpy arrays; the sum-tree is
# rebuilt from the priorities on load, bit for bit (see load_state_dict).

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport isfinite, pow
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

import numpy as np

from rng cimport rng_below, rng_next, rng_seed, rng_uniform

from sumtree cimport tree_find, tree_set

# Channels-last (NHWC) stacks: dst[p * stack + j] = frame_j[p], the stack's frames interleaved
# per pixel. Plain C with restrict pointers so that gcc -O3 vectorises the common stacks, 4 and 2
# (16-byte loads, byte unpacks, 16-byte stores: seen in the built module); other stacks take the
# strided loop. The sources may be the same frame (first-frame padding): they are only read.
# Gathering a batch this way costs about 1.2-1.3x the memcpy of the (stack, H, W) layout from a
# large ring (four read streams instead of one; software prefetching measured no gain).
cdef extern from *:
    """
    #include <stdint.h>
    static void replay_interleave2(const uint8_t* restrict s0, const uint8_t* restrict s1,
                                   uint8_t* restrict dst, int64_t n) {
        for (int64_t p = 0; p < n; p++) {
            dst[2 * p] = s0[p];
            dst[2 * p + 1] = s1[p];
        }
    }
    static void replay_interleave4(const uint8_t* restrict s0, const uint8_t* restrict s1,
                                   const uint8_t* restrict s2, const uint8_t* restrict s3,
                                   uint8_t* restrict dst, int64_t n) {
        for (int64_t p = 0; p < n; p++) {
            dst[4 * p] = s0[p];
            dst[4 * p + 1] = s1[p];
            dst[4 * p + 2] = s2[p];
            dst[4 * p + 3] = s3[p];
        }
    }
    static void replay_interleave_strided(const uint8_t* restrict src, int stack, int j,
                                          uint8_t* restrict dst, int64_t n) {
        for (int64_t p = 0; p < n; p++)
            dst[p * stack + j] = src[p];
    }
    """
    void replay_interleave2(const uint8_t* s0, const uint8_t* s1, uint8_t* dst,
                            int64_t n) noexcept nogil
    void replay_interleave4(const uint8_t* s0, const uint8_t* s1, const uint8_t* s2,
                            const uint8_t* s3, uint8_t* dst, int64_t n) noexcept nogil
    void replay_interleave_strided(const uint8_t* src, int stack, int j, uint8_t* dst,
                                   int64_t n) noexcept nogil

cdef enum:
    FIRST = 1
    HAS_TRANSITION = 2
    TERMINATED = 4
    TRUNCATED = 8

# A draw that lands on a zero leaf through float rounding is redrawn at most this often.
cdef int PER_REDRAWS = 64

# Version of the state_dict() layout; load_state_dict() refuses any other.
SNAPSHOT_VERSION = 1


cdef class Batch:
    """One sampled batch, owned and ready for ``torch.from_numpy`` (no copy).

    obs, next_obs: uint8 (B, stack, H, W); action: int64 (B,); reward: float32 (B,) n-step
    discounted return; discount: float32 (B,) gamma**m for an m-step window, 0 after a terminal;
    index: int64 (B,) logical indices (for update_priorities); weight: float32 (B,) importance
    weights (all 1 for uniform sampling).

    Batch(batch_size, stack, height, width, channels_last=False). Every array is C-contiguous,
    except obs and next_obs with channels_last=True: they are then (B, stack, H, W)-shaped views
    (same shape, same values) of owned C-contiguous (B, H, W, stack) buffers, i.e. each pixel's
    stack of frames lies together in memory. ``torch.from_numpy`` of such a view is a tensor
    that is contiguous in ``torch.channels_last`` memory format, so a network with channels_last
    weights reads it without permuting the bytes. ``channels_last`` says which layout it is.
    """

    cdef readonly object obs, next_obs, action, reward, discount, index, weight
    cdef readonly int batch_size
    cdef readonly bint channels_last
    cdef object _obs_buf, _next_buf   # the owned C-contiguous buffers behind obs and next_obs

    def __init__(self, int batch_size, int stack, int height, int width, bint channels_last=False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size}")
        self.batch_size = batch_size
        self.channels_last = channels_last
        if channels_last:
            self._obs_buf = np.empty((batch_size, height, width, stack), np.uint8)
            self._next_buf = np.empty((batch_size, height, width, stack), np.uint8)
            self.obs = self._obs_buf.transpose(0, 3, 1, 2)
            self.next_obs = self._next_buf.transpose(0, 3, 1, 2)
        else:
            self._obs_buf = np.empty((batch_size, stack, height, width), np.uint8)
            self._next_buf = np.empty((batch_size, stack, height, width), np.uint8)
            self.obs, self.next_obs = self._obs_buf, self._next_buf
        self.action = np.empty(batch_size, np.int64)
        self.reward = np.empty(batch_size, np.float32)
        self.discount = np.empty(batch_size, np.float32)
        self.index = np.empty(batch_size, np.int64)
        self.weight = np.empty(batch_size, np.float32)

    def __repr__(self):
        layout = ", channels_last" if self.channels_last else ""
        return f"Batch(batch_size={self.batch_size}, obs={self.obs.shape}{layout})"


cdef inline bint _in_unit(double x):
    return 0.0 <= x <= 1.0


cdef class FrameReplay:
    """Circular replay memory of preprocessed frames with uniform or prioritized sampling.

    FrameReplay(capacity, frame_shape=(84, 84), stack=4, n_step=1, gamma=0.99,
                prioritized=False, alpha=0.6, seed=0)

    Writing an episode: ``reset(first_frame)``, then ``add(action, reward, terminated, truncated,
    next_frame)`` per step. A frame argument of None means the frame is already in
    ``frame_slot()`` (the preprocessing kernel can write there directly). Frames before an
    episode's first frame are padded with that first frame (as gymnasium's FrameStack does).
    """

    cdef readonly int64_t capacity
    cdef readonly int stack, n_step, height, width
    cdef readonly double gamma, alpha
    cdef readonly bint prioritized
    cdef readonly int64_t total          # frames written so far (logical index of the next slot)
    cdef readonly double max_priority    # largest priority given so far (before the alpha power)

    cdef object _frames, _action, _reward, _flags, _prio, _tree
    cdef uint8_t* frames
    cdef uint8_t* actions
    cdef float* rewards
    cdef uint8_t* flags
    cdef float* prio                     # priority ** alpha of each slot
    cdef double* tree
    cdef int64_t leaves
    cdef int64_t frame_bytes
    cdef int64_t live_transitions        # live slots with HAS_TRANSITION
    cdef bint episode_open               # the newest frame awaits add()
    cdef int64_t episode_transitions     # transitions in the open episode
    cdef uint64_t rng[4]
    cdef double* gamma_pow               # gamma ** j for j = 0..n_step

    def __cinit__(self):
        self.gamma_pow = NULL

    def __init__(self, capacity, frame_shape=(84, 84), int stack=4, int n_step=1,
                 double gamma=0.99, bint prioritized=False, double alpha=0.6, seed=0):
        if stack < 1:
            raise ValueError(f"stack must be >= 1, got {stack}")
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        try:
            capacity = int(capacity)
        except (TypeError, ValueError):
            raise ValueError(f"capacity must be an int, got {capacity!r}") from None
        if capacity <= stack + n_step:
            raise ValueError(
                f"capacity must be greater than stack + n_step = {stack + n_step} "
                f"(room for one full stack and its n-step window), got {capacity}"
            )
        if not (isfinite(gamma) and _in_unit(gamma)):
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if prioritized and not (isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        try:
            h, w = (int(v) for v in frame_shape)
        except (TypeError, ValueError):
            raise ValueError(f"frame_shape must be a (height, width) pair, got {frame_shape!r}") from None
        if h <= 0 or w <= 0:
            raise ValueError(f"frame_shape must be positive, got {frame_shape!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")

        self.capacity, self.stack, self.n_step = capacity, stack, n_step
        self.height, self.width, self.gamma = h, w, gamma
        self.prioritized, self.alpha = prioritized, alpha
        self.frame_bytes = h * w
        # np.empty: pages are touched only as the ring fills, so a large ring costs nothing up front.
        self._frames = np.empty((capacity, h, w), np.uint8)
        self._action = np.zeros(capacity, np.uint8)
        self._reward = np.zeros(capacity, np.float32)
        self._flags = np.zeros(capacity, np.uint8)
        self.frames = _data_u8(self._frames)
        self.actions = _data_u8(self._action)
        self.rewards = _data_f32(self._reward)
        self.flags = _data_u8(self._flags)
        self.leaves = 1
        if prioritized:
            while self.leaves < capacity:
                self.leaves *= 2
            self._prio = np.zeros(capacity, np.float32)
            self._tree = np.zeros(2 * self.leaves, np.float64)
            self.prio = _data_f32(self._prio)
            self.tree = _data_f64(self._tree)
        self.max_priority = 1.0
        self.gamma_pow = <double*> PyMem_Malloc((n_step + 1) * sizeof(double))
        if self.gamma_pow == NULL:
            raise MemoryError()
        for j in range(n_step + 1):
            self.gamma_pow[j] = pow(gamma, j)
        self.total = 0
        self.live_transitions = 0
        self.episode_open = False
        self.episode_transitions = 0
        rng_seed(self.rng, <uint64_t> int(seed))

    def __dealloc__(self):
        PyMem_Free(self.gamma_pow)

    # ------------------------------------------------------------------ sizes
    @property
    def frame_shape(self):
        return (self.height, self.width)

    @property
    def live_start(self):
        """Oldest logical index that may be read."""
        return self._live_start()

    @property
    def nbytes(self):
        """Bytes held by the ring (frames, per-slot fields, priorities and sum-tree)."""
        n = self._frames.nbytes + self._action.nbytes + self._reward.nbytes + self._flags.nbytes
        if self.prioritized:
            n += self._prio.nbytes + self._tree.nbytes
        return n

    @property
    def bytes_per_transition(self):
        return self.nbytes / self.capacity

    def __len__(self):
        """Number of transitions that can be sampled now."""
        return self.num_valid()

    def __repr__(self):
        kind = "prioritized" if self.prioritized else "uniform"
        return (f"FrameReplay(capacity={self.capacity}, frame_shape={self.frame_shape}, "
                f"stack={self.stack}, n_step={self.n_step}, gamma={self.gamma}, {kind}, "
                f"valid={self.num_valid()})")

    # ------------------------------------------------------------------ writing
    def frame_slot(self):
        """Writable (H, W) view of the slot that the next reset()/add() stores its frame in."""
        return self._frames[self.total % self.capacity]

    def reset(self, frame=None):
        """Begin an episode with its first frame (None: already written into frame_slot()).

        Resetting while an episode is still open ends that episode as truncated at its last step.
        """
        if self.episode_open and self.episode_transitions > 0:
            self.flags[(self.total - 2) % self.capacity] |= TRUNCATED
        self._write_frame(frame, FIRST)
        self.episode_open = True
        self.episode_transitions = 0
        self._refresh_edges()

    def add(self, action, reward, terminated, truncated, next_frame=None):
        """Record one step of the open episode and the frame that followed it."""
        if not self.episode_open:
            raise ValueError("add() needs an open episode: call reset(first_frame) first "
                             "(and again after a terminated or truncated step)")
        try:
            a = int(action)
        except (TypeError, ValueError):
            raise ValueError(f"action must be an int in [0, 255], got {action!r}") from None
        if not 0 <= a <= 255:
            raise ValueError(f"action must be an int in [0, 255], got {action!r}")
        try:
            r = float(reward)
        except (TypeError, ValueError):
            raise ValueError(f"reward must be a finite number, got {reward!r}") from None
        if not isfinite(r):
            raise ValueError(f"reward must be a finite number, got {reward!r}")
        cdef int64_t slot = (self.total - 1) % self.capacity
        if next_frame is not None:
            _check_frame(next_frame, self.height, self.width, "next_frame")
        self.actions[slot] = <uint8_t> a
        self.rewards[slot] = <float> r
        self.flags[slot] |= HAS_TRANSITION | (TERMINATED if terminated else 0) | (TRUNCATED if truncated else 0)
        self.live_transitions += 1
        self.episode_transitions += 1
        if self.prioritized:
            self.prio[slot] = <float> pow(self.max_priority, self.alpha)
        self._write_frame(next_frame, 0)
        if terminated or truncated:
            self.episode_open = False
        self._refresh_edges()

    cdef _write_frame(self, frame, uint8_t flag):
        cdef int64_t slot = self.total % self.capacity
        if frame is not None:
            _check_frame(frame, self.height, self.width, "frame")
            self._frames[slot] = frame
        # The oldest live slot leaves the live range now (its physical slot is handed out next).
        cdef int64_t leaving = self.total + 1 - self.capacity
        if leaving >= 0:
            if self.flags[leaving % self.capacity] & HAS_TRANSITION:
                self.live_transitions -= 1
            if self.prioritized:
                tree_set(self.tree, self.leaves, leaving % self.capacity, 0.0)
        self.flags[slot] = flag
        self.total += 1

    cdef void _refresh_edges(self) noexcept:
        """Recompute the sum-tree leaves whose validity may have changed with the last write."""
        if not self.prioritized:
            return
        cdef int64_t L
        cdef int64_t start = self._live_start()
        for L in range(max(start, self.total - 2 - self.n_step), self.total):
            self._refresh(L)
        for L in range(start, min(start + self.stack, self.total)):
            self._refresh(L)

    cdef inline void _refresh(self, int64_t L) noexcept nogil:
        cdef int64_t slot = L % self.capacity
        cdef int m
        cdef bint term
        tree_set(self.tree, self.leaves, slot, self.prio[slot] if self._window(L, &m, &term) else 0.0)

    # ------------------------------------------------------------------ validity
    cdef inline int64_t _live_start(self) noexcept nogil:
        return max(<int64_t> 0, self.total - self.capacity + 1)

    cdef inline int64_t _episode_floor(self, int64_t L) noexcept nogil:
        """Lowest frame index the stack ending at L reads: L - (stack - 1), or the episode start.

        Below the live range it returns live_start - 1 (L is then not a valid transition).
        """
        cdef int64_t j = L
        # Never below start - 1: a floor under the live range makes L invalid whatever the stale
        # slots under it hold, and the walk must not reach logical index -1 (before the buffer).
        cdef int64_t lowest = max(L - (self.stack - 1), self._live_start() - 1)
        while j > lowest and not (self.flags[j % self.capacity] & FIRST):
            j -= 1
        return j

    cdef inline bint _window(self, int64_t L, int* steps, bint* terminal) noexcept nogil:
        """True if L is a valid transition; sets its window length and whether it ends in a terminal."""
        cdef int64_t start = self._live_start()
        cdef int j
        cdef uint8_t f
        if L < start or L >= self.total - 1:
            return False
        if not (self.flags[L % self.capacity] & HAS_TRANSITION):
            return False
        if self._episode_floor(L) < start:
            return False
        for j in range(self.n_step):
            if L + j >= self.total - 1:
                return False                    # step L + j not recorded yet
            f = self.flags[(L + j) % self.capacity]
            if not (f & HAS_TRANSITION):
                return False
            if f & (TERMINATED | TRUNCATED):
                steps[0] = j + 1
                terminal[0] = (f & TERMINATED) != 0
                return True
        steps[0] = self.n_step
        terminal[0] = False
        return L + self.n_step <= self.total - 1  # bootstrap frame written

    cpdef int64_t num_valid(self):
        """Transitions that can be sampled now (exact; O(stack + n_step))."""
        cdef int64_t start = self._live_start()
        cdef int64_t n = self.live_transitions
        cdef int64_t L
        cdef int64_t low_end = min(start + self.stack - 1, self.total)
        cdef int64_t high_begin = max(low_end, self.total - 1 - self.n_step)
        cdef int m
        cdef bint term
        # Only the first stack-1 live slots (history cut off) and the last n_step + 1 slots
        # (window incomplete) can hold a recorded transition that is not valid.
        for L in range(start, low_end):
            if (self.flags[L % self.capacity] & HAS_TRANSITION) and not self._window(L, &m, &term):
                n -= 1
        for L in range(high_begin, self.total):
            if (self.flags[L % self.capacity] & HAS_TRANSITION) and not self._window(L, &m, &term):
                n -= 1
        return n

    def valid_indices(self):
        """Every valid logical index, ascending (O(capacity); for tests and inspection)."""
        cdef int m
        cdef bint term
        out = [L for L in range(self._live_start(), self.total) if self._window(L, &m, &term)]
        return np.asarray(out, dtype=np.int64)

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size, double beta=0.4, Batch out=None, bint channels_last=False):
        """Draw batch_size transitions (with replacement): uniformly, or by priority ** alpha.

        beta: importance-weight exponent for prioritized sampling, in [0, 1]; weights are
        (N * P(i)) ** -beta divided by the batch's largest weight. out: a Batch of the same
        batch_size to fill instead of allocating a new one. channels_last: the layout of the
        new Batch's obs and next_obs when out is None (see Batch); a given out keeps its own
        layout, whatever channels_last says. Both layouts hold the same values.
        """
        try:
            B = int(batch_size)
        except (TypeError, ValueError):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}") from None
        if B < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not (isfinite(beta) and _in_unit(beta)):
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        cdef int64_t valid = self.num_valid()
        if B > valid:
            raise ValueError(
                f"batch_size {B} is larger than the {valid} valid transitions in the replay; "
                "add more steps first (or sample a smaller batch)"
            )
        out = self._batch_for(B, out, channels_last)
        cdef int64_t[::1] idx = out.index
        cdef float[::1] wgt = out.weight
        cdef bint ok
        cdef int i, nb = B
        with nogil:
            if self.prioritized:
                ok = self._draw_prioritized(nb, beta, valid, &idx[0], &wgt[0])
            else:
                self._draw_uniform(nb, &idx[0])
                for i in range(nb):
                    wgt[i] = 1.0
                ok = True
        if not ok:
            raise RuntimeError("prioritized draw kept landing on zero-priority leaves; sum-tree "
                               "is inconsistent (please report this)")
        self._fill(out)
        return out

    def gather(self, indices, Batch out=None, bint channels_last=False):
        """Batch of the given valid logical indices (weights 1); for inspection and tests.

        out and channels_last as for sample(): a given out keeps its own layout.
        """
        idx = np.ascontiguousarray(indices, dtype=np.int64)
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"indices must be a non-empty 1-D sequence of ints, got shape {idx.shape}")
        cdef int m
        cdef bint term
        for L in idx:
            if not self._window(L, &m, &term):
                raise ValueError(
                    f"index {L} is not a valid transition now (valid: valid_indices(), live range "
                    f"[{self._live_start()}, {self.total - 1}])"
                )
        out = self._batch_for(idx.size, out, channels_last)
        out.index[:] = idx
        out.weight[:] = 1.0
        self._fill(out)
        return out

    cdef _fill(self, Batch out):
        """Gather every field of `out` for the valid logical indices already in out.index."""
        # The owned buffers: (B, stack, H, W), or (B, H, W, stack) for a channels_last batch.
        cdef uint8_t[:, :, :, ::1] obs = out._obs_buf
        cdef uint8_t[:, :, :, ::1] nxt = out._next_buf
        cdef int64_t[::1] act = out.action
        cdef float[::1] ret = out.reward
        cdef float[::1] disc = out.discount
        cdef int64_t[::1] idx = out.index
        with nogil:
            self._gather(out.batch_size, &idx[0], &obs[0, 0, 0, 0], &nxt[0, 0, 0, 0], &act[0],
                         &ret[0], &disc[0], out.channels_last)

    cdef Batch _batch_for(self, int B, Batch out, bint channels_last):
        """`out` if it fits a batch of B from this replay (else a clear error); a new Batch of
        the channels_last layout if None."""
        if out is None:
            return Batch(B, self.stack, self.height, self.width, channels_last)
        if out.batch_size != B or out.obs.shape[1:] != (self.stack, self.height, self.width):
            raise ValueError(
                f"out must be a Batch of batch_size {B} with obs of shape ({B}, {self.stack}, "
                f"{self.height}, {self.width}), got batch_size {out.batch_size} with obs "
                f"{out.obs.shape}"
            )
        return out

    cdef void _draw_uniform(self, int B, int64_t* idx) noexcept nogil:
        cdef int64_t start = self._live_start()
        cdef uint64_t span = <uint64_t> (self.total - start)
        cdef int64_t L
        cdef int m, i
        cdef bint term
        for i in range(B):
            # Rejection: exact uniform over valid indices; invalid ones are a few per episode
            # and at the two ends of the ring, so a redraw is rare.
            while True:
                L = start + <int64_t> rng_below(self.rng, span)
                if self._window(L, &m, &term):
                    break
            idx[i] = L

    cdef bint _draw_prioritized(self, int B, double beta, int64_t valid, int64_t* idx,
                                float* wgt) noexcept nogil:
        cdef double total = self.tree[1]
        cdef double p, wmax = 0.0
        cdef int64_t start = self._live_start()
        cdef int64_t slot, L
        cdef int i, tries
        for i in range(B):
            for tries in range(PER_REDRAWS):
                slot = tree_find(self.tree, self.leaves, rng_uniform(self.rng) * total)
                p = self.tree[self.leaves + slot]
                if p > 0.0 and slot < self.capacity:
                    break
            else:
                return False
            # The live logical index that lives in this slot.
            L = start + ((slot - start % self.capacity) + self.capacity) % self.capacity
            idx[i] = L
            wgt[i] = <float> pow(valid * (p / total), -beta)
            if wgt[i] > wmax:
                wmax = wgt[i]
        for i in range(B):
            wgt[i] = <float> (wgt[i] / wmax)
        return True

    cdef void _gather(self, int B, const int64_t* idx, uint8_t* obs, uint8_t* nxt, int64_t* act,
                      float* ret, float* disc, bint channels_last) noexcept nogil:
        """Fill B transitions; obs and nxt are (B, stack, H, W), or (B, H, W, stack) when
        channels_last (the same frames, first-frame padding included, interleaved per pixel)."""
        cdef int i, j, m
        cdef bint term
        cdef int64_t L, floor
        cdef double g
        cdef int64_t stack_bytes = self.stack * self.frame_bytes
        # (Software prefetching of the next transitions' frames was measured: no gain; the
        # hardware prefetcher already streams each 7 KB frame.)
        for i in range(B):
            L = idx[i]
            self._window(L, &m, &term)
            floor = self._episode_floor(L)
            # The bootstrap observation belongs to the same episode, so it shares the floor.
            if channels_last:
                self._copy_stack_nhwc(L, floor, obs + i * stack_bytes)
                self._copy_stack_nhwc(L + m, floor, nxt + i * stack_bytes)
            else:
                self._copy_stack(L, floor, obs + i * stack_bytes)
                self._copy_stack(L + m, floor, nxt + i * stack_bytes)
            act[i] = self.actions[L % self.capacity]
            g = 0.0
            for j in range(m):
                g += self.gamma_pow[j] * self.rewards[(L + j) % self.capacity]
            ret[i] = <float> g
            disc[i] = 0.0 if term else <float> self.gamma_pow[m]

    cdef inline const uint8_t* _stack_frame(self, int64_t L, int64_t floor, int j) noexcept nogil:
        """Frame j (0 = oldest) of the stack ending at L; below `floor`, the floor's frame."""
        cdef int64_t src = L - (self.stack - 1) + j
        if src < floor:
            src = floor                         # first-frame padding before the episode start
        return self.frames + (src % self.capacity) * self.frame_bytes

    cdef inline void _copy_stack(self, int64_t L, int64_t floor, uint8_t* dst) noexcept nogil:
        """The stack ending at L as (stack, H, W)."""
        cdef int j
        for j in range(self.stack):
            memcpy(dst + j * self.frame_bytes, self._stack_frame(L, floor, j), self.frame_bytes)

    cdef inline void _copy_stack_nhwc(self, int64_t L, int64_t floor, uint8_t* dst) noexcept nogil:
        """The stack ending at L as (H, W, stack): its frames interleaved per pixel."""
        cdef int j
        cdef int64_t n = self.frame_bytes
        if self.stack == 4:
            replay_interleave4(self._stack_frame(L, floor, 0), self._stack_frame(L, floor, 1),
                               self._stack_frame(L, floor, 2), self._stack_frame(L, floor, 3),
                               dst, n)
        elif self.stack == 2:
            replay_interleave2(self._stack_frame(L, floor, 0), self._stack_frame(L, floor, 1),
                               dst, n)
        elif self.stack == 1:
            memcpy(dst, self._stack_frame(L, floor, 0), n)
        else:
            for j in range(self.stack):
                replay_interleave_strided(self._stack_frame(L, floor, j), self.stack, j, dst, n)

    def current_stack(self, out=None):
        """The acting observation: the newest frame and the stack - 1 before it, (stack, H, W)."""
        if self.total == 0:
            raise ValueError("current_stack() needs a frame: call reset(first_frame) first")
        if out is None:
            out = np.empty((self.stack, self.height, self.width), np.uint8)
        else:
            _check_array(out, (self.stack, self.height, self.width), "out")
        cdef uint8_t[:, :, ::1] o = out
        cdef int64_t L = self.total - 1
        self._copy_stack(L, max(self._episode_floor(L), self._live_start()), &o[0, 0, 0])
        return out

    # ------------------------------------------------------------------ priorities
    def update_priorities(self, indices, priorities):
        """Set new priorities (e.g. |TD error| + eps) for sampled logical indices.

        Indices that have left the ring since they were sampled are skipped.
        """
        if not self.prioritized:
            raise ValueError("update_priorities() needs a replay built with prioritized=True")
        idx = np.ascontiguousarray(indices, dtype=np.int64)
        pr = np.ascontiguousarray(priorities, dtype=np.float64)
        if idx.ndim != 1 or pr.shape != idx.shape:
            raise ValueError(f"indices and priorities must be 1-D and equally long, got shapes "
                             f"{np.shape(indices)} and {np.shape(priorities)}")
        if pr.size and not (np.all(np.isfinite(pr)) and np.all(pr > 0)):
            bad = pr[~(np.isfinite(pr) & (pr > 0))][0]
            raise ValueError(f"priorities must be finite and > 0, got {bad}")
        cdef const int64_t[::1] iv = idx
        cdef const double[::1] pv = pr
        cdef Py_ssize_t i
        cdef int64_t L, slot
        cdef int64_t start = self._live_start()
        with nogil:
            for i in range(iv.shape[0]):
                L = iv[i]
                if L < start or L >= self.total:
                    continue
                slot = L % self.capacity
                self.prio[slot] = <float> pow(pv[i], self.alpha)
                if pv[i] > self.max_priority:
                    self.max_priority = pv[i]
                self._refresh(L)

    def probabilities(self, indices):
        """P(i) = leaf / total for logical indices (prioritized only; for tests and inspection)."""
        if not self.prioritized:
            raise ValueError("probabilities() needs a replay built with prioritized=True")
        idx = np.asarray(indices, dtype=np.int64)
        total = self.tree[1]
        return np.array([self.tree[self.leaves + (L % self.capacity)] / total if total > 0 else 0.0
                         for L in idx.ravel()]).reshape(idx.shape)

    # ------------------------------------------------------------------ RNG state
    @property
    def rng_state(self):
        """The sampler's xoshiro256** state (four uint64 words), to save and restore."""
        return tuple(int(self.rng[i]) for i in range(4))

    @rng_state.setter
    def rng_state(self, value):
        words = tuple(int(v) for v in value)
        if len(words) != 4 or not all(0 <= v < 2 ** 64 for v in words) or not any(words):
            raise ValueError(f"rng_state must be four uint64 words, not all zero, got {value!r}")
        for i in range(4):
            self.rng[i] = words[i]

    # ------------------------------------------------------------------ snapshots
    def state_dict(self, *, bint copy=True):
        """The exact state of the replay as a dict of numpy arrays (scalars as 0-d arrays).

        Every value is a plain numeric or bool array, so the dict can be written with
        ``numpy.savez(path, **state)`` and read back with ``numpy.load(path, allow_pickle=False)``,
        or turned into tensors with ``torch.from_numpy``. ``load_state_dict`` restores it into a
        FrameReplay built with the same parameters; the two then write and sample identically
        (same batches, indices, weights and priorities), bit for bit.

        Keys (C = capacity, N = min(total, C) slots written so far, H x W = frame_shape):

        - version int64: the layout version (SNAPSHOT_VERSION, now 1);
        - the constructor's parameters, checked on load: capacity int64, frame_shape int64 (2,),
          stack int64, n_step int64, gamma float64, prioritized bool, alpha float64;
        - frames uint8 (N, H, W): only the slots ever written (all C once the ring has wrapped);
        - action uint8 (C,), reward float32 (C,), flags uint8 (C,): the per-slot fields;
        - prio float32 (C,): each slot's priority ** alpha (shape (0,) for a uniform replay);
          the sum-tree is not stored: load rebuilds it from prio and the flags;
        - total int64, max_priority float64, live_transitions int64, episode_open bool,
          episode_transitions int64: the counters;
        - rng_state uint64 (4,): the sampler's xoshiro256** state (as ``rng_state``).

        A frame written into ``frame_slot()`` but not yet committed by reset()/add() is part of
        the snapshot only once the ring has wrapped (before that only the first N slots are).

        copy: True (default) returns arrays of its own; False returns read-only views of the
        ring (no copy of a large ring's frames): they follow the ring, so write them out (e.g.
        with numpy.savez) before the next reset() or add().
        """
        cdef int64_t n = min(self.total, self.capacity)
        state = {
            "version": np.asarray(SNAPSHOT_VERSION, np.int64),
            "capacity": np.asarray(self.capacity, np.int64),
            "frame_shape": np.asarray((self.height, self.width), np.int64),
            "stack": np.asarray(self.stack, np.int64),
            "n_step": np.asarray(self.n_step, np.int64),
            "gamma": np.asarray(self.gamma, np.float64),
            "prioritized": np.asarray(bool(self.prioritized), np.bool_),
            "alpha": np.asarray(self.alpha, np.float64),
            "frames": _snapshot_array(self._frames[:n], copy),
            "action": _snapshot_array(self._action, copy),
            "reward": _snapshot_array(self._reward, copy),
            "flags": _snapshot_array(self._flags, copy),
            "prio": (_snapshot_array(self._prio, copy) if self.prioritized
                     else np.zeros(0, np.float32)),
            "total": np.asarray(self.total, np.int64),
            "max_priority": np.asarray(self.max_priority, np.float64),
            "live_transitions": np.asarray(self.live_transitions, np.int64),
            "episode_open": np.asarray(bool(self.episode_open), np.bool_),
            "episode_transitions": np.asarray(self.episode_transitions, np.int64),
            "rng_state": np.array([self.rng[i] for i in range(4)], np.uint64),
        }
        return state

    def load_state_dict(self, state):
        """Restore a ``state_dict()`` into this replay (built with the same parameters).

        state: a mapping with exactly the keys of ``state_dict()``; each value a numpy array or
        anything ``numpy.asarray`` turns into one of the same dtype and shape (e.g. a CPU torch
        tensor, or an entry of ``numpy.load(..., allow_pickle=False)``).

        Everything is checked before anything is written: a missing or unknown key, a wrong
        dtype or shape, a constructor parameter that differs from this replay's, or values that
        cannot come from a replay (a negative total, a frames count other than min(total,
        capacity), a live_transitions count that disagrees with the flags, ...) raise ValueError
        naming the key, the value and what was expected, and leave this replay unchanged.

        The sum-tree is rebuilt from prio: each live, valid transition's leaf is its priority
        ** alpha, every other leaf 0, and each parent the sum of its two children. A running
        replay keeps exactly that invariant (every update recomputes the parents from their
        children), so the rebuilt tree equals the saved replay's bit for bit.
        """
        st = _SnapshotReader(state)
        version = st.scalar("version", np.int64)
        if version != SNAPSHOT_VERSION:
            raise ValueError(f"state['version'] is {version}, expected {SNAPSHOT_VERSION} (a "
                             "snapshot of another FrameReplay layout cannot be loaded)")
        st.param("capacity", st.scalar("capacity", np.int64), self.capacity)
        st.param("frame_shape", tuple(int(v) for v in st.array("frame_shape", np.int64, (2,))),
                 (self.height, self.width))
        st.param("stack", st.scalar("stack", np.int64), self.stack)
        st.param("n_step", st.scalar("n_step", np.int64), self.n_step)
        st.param("gamma", st.scalar("gamma", np.float64), self.gamma)
        st.param("prioritized", st.scalar("prioritized", np.bool_), bool(self.prioritized))
        st.param("alpha", st.scalar("alpha", np.float64), self.alpha)

        C = int(self.capacity)
        total = st.scalar("total", np.int64)
        if total < 0:
            raise ValueError(f"state['total'] is {total}, expected an int >= 0")
        n = min(total, C)
        frames = st.array("frames", np.uint8, (n, self.height, self.width),
                          f"(min(total={total}, capacity={C}), H, W)")
        action = st.array("action", np.uint8, (C,))
        reward = st.array("reward", np.float32, (C,))
        flags = st.array("flags", np.uint8, (C,))
        prio = st.array("prio", np.float32, (C,) if self.prioritized else (0,),
                        "(capacity,)" if self.prioritized else "(0,) for a uniform replay")
        if not np.all(np.isfinite(reward)):
            raise ValueError(f"state['reward'] holds a non-finite value "
                             f"({reward[~np.isfinite(reward)][0]}); rewards are finite")
        if np.any(flags > (FIRST | HAS_TRANSITION | TERMINATED | TRUNCATED)):
            raise ValueError(f"state['flags'] holds {int(flags.max())}, expected values in "
                             f"[0, 15] (FIRST=1 | HAS_TRANSITION=2 | TERMINATED=4 | TRUNCATED=8)")
        if total < C and np.any(flags[total:]):
            raise ValueError(f"state['flags'] marks slot {total + int(np.flatnonzero(flags[total:])[0])}"
                             f", which was never written (total={total}); expected 0 there")
        if self.prioritized and not np.all(np.isfinite(prio) & (prio >= 0)):
            bad = prio[~(np.isfinite(prio) & (prio >= 0))][0]
            raise ValueError(f"state['prio'] holds {bad}, expected finite values >= 0")

        max_priority = st.scalar("max_priority", np.float64)
        if not (isfinite(max_priority) and max_priority >= 1.0):
            raise ValueError(f"state['max_priority'] is {max_priority}, expected a finite number "
                             ">= 1 (it starts at 1 and only grows)")
        has = (flags & HAS_TRANSITION) != 0
        if total < C:
            live = int(np.count_nonzero(has[:total]))
        else:
            live = int(np.count_nonzero(has)) - int(has[total % C])
        live_transitions = st.scalar("live_transitions", np.int64)
        if live_transitions != live:
            raise ValueError(f"state['live_transitions'] is {live_transitions}, but the flags of "
                             f"the live slots hold {live} transitions; expected {live}")
        episode_open = st.scalar("episode_open", np.bool_)
        if episode_open and total == 0:
            raise ValueError("state['episode_open'] is True with total=0; expected False (an open "
                             "episode has written its first frame)")
        episode_transitions = st.scalar("episode_transitions", np.int64)
        if not 0 <= episode_transitions <= max(total - 1, 0):
            raise ValueError(f"state['episode_transitions'] is {episode_transitions}, expected an "
                             f"int in [0, {max(total - 1, 0)}] (total - 1)")
        words = st.array("rng_state", np.uint64, (4,))
        if not np.any(words):
            raise ValueError("state['rng_state'] is all zero, expected four uint64 words, not all "
                             "zero (an all-zero xoshiro256** state only ever yields 0)")
        st.no_extra_keys()

        # Everything checked: write.
        self._frames[:n] = frames
        self._action[:] = action
        self._reward[:] = reward
        self._flags[:] = flags
        if self.prioritized:
            self._prio[:] = prio
        self.total = total
        self.max_priority = max_priority
        self.live_transitions = live_transitions
        self.episode_open = episode_open
        self.episode_transitions = episode_transitions
        for i in range(4):
            self.rng[i] = int(words[i])
        if self.prioritized:
            with nogil:
                self._rebuild_tree()

    cdef void _rebuild_tree(self) noexcept nogil:
        """Every leaf from prio and validity, then every parent from its children (bottom up)."""
        cdef int64_t i, L
        cdef int m
        cdef bint term
        for i in range(2 * self.leaves):
            self.tree[i] = 0.0
        for L in range(self._live_start(), self.total):
            if self._window(L, &m, &term):
                self.tree[self.leaves + L % self.capacity] = self.prio[L % self.capacity]
        for i in range(self.leaves - 1, 0, -1):
            self.tree[i] = self.tree[2 * i] + self.tree[2 * i + 1]


cdef object _snapshot_array(arr, bint copy):
    if copy:
        return arr.copy()
    view = arr.view()
    view.flags.writeable = False
    return view


_STATE_KEYS = ("version", "capacity", "frame_shape", "stack", "n_step", "gamma", "prioritized",
               "alpha", "frames", "action", "reward", "flags", "prio", "total", "max_priority",
               "live_transitions", "episode_open", "episode_transitions", "rng_state")


class _SnapshotReader:
    """Typed, checked access to the entries of a FrameReplay state dict (for load_state_dict)."""

    def __init__(self, state):
        try:
            keys = set(state.keys())
        except (AttributeError, TypeError):
            raise ValueError(f"state must be a dict from FrameReplay.state_dict(), got "
                             f"{type(state).__name__}") from None
        self.state = state
        self.keys = keys
        missing = [k for k in _STATE_KEYS if k not in keys]
        if missing:
            raise ValueError(f"state is missing key {missing[0]!r} (a FrameReplay.state_dict() "
                             f"has keys {', '.join(_STATE_KEYS)})")

    def array(self, key, dtype, shape, shape_text=None):
        try:
            a = np.asarray(self.state[key])
        except Exception as exc:  # e.g. a CUDA tensor, or something numpy cannot read
            raise ValueError(f"state[{key!r}] could not be read as a numpy array "
                             f"({type(exc).__name__}: {exc})") from None
        want = np.dtype(dtype)
        if a.dtype != want or a.shape != tuple(shape):
            expect = shape_text or str(tuple(shape))
            raise ValueError(f"state[{key!r}] is a {a.dtype} array of shape {a.shape}, expected "
                             f"{want} of shape {expect}"
                             + (f" = {tuple(shape)}" if shape_text else ""))
        return a

    def scalar(self, key, dtype):
        return self.array(key, dtype, (), "() (a 0-d array)")[()].item()

    def param(self, key, got, expected):
        if got != expected:
            raise ValueError(f"state[{key!r}] is {got!r}, but this replay was built with "
                             f"{key}={expected!r}; load into a FrameReplay constructed with the "
                             "same parameters")

    def no_extra_keys(self):
        extra = sorted(str(k) for k in self.keys if k not in _STATE_KEYS)
        if extra:
            raise ValueError(f"state has unexpected key(s) {', '.join(map(repr, extra))} (a "
                             f"FrameReplay.state_dict() has keys {', '.join(_STATE_KEYS)})")


cdef uint8_t* _data_u8(arr):
    cdef uint8_t[::1] v = arr.reshape(-1)
    return &v[0]


cdef float* _data_f32(arr):
    cdef float[::1] v = arr
    return &v[0]


cdef double* _data_f64(arr):
    cdef double[::1] v = arr
    return &v[0]


cdef _check_array(obj, tuple shape, str name):
    if (not isinstance(obj, np.ndarray) or obj.dtype != np.uint8 or obj.shape != shape
            or not obj.flags.c_contiguous or not obj.flags.writeable):
        got = (f"{obj.dtype} array of shape {obj.shape}" if isinstance(obj, np.ndarray)
               else type(obj).__name__)
        raise ValueError(f"{name} must be a writable C-contiguous uint8 array of shape {shape}, got {got}")


cdef _check_frame(obj, int h, int w, str name):
    if not isinstance(obj, np.ndarray) or obj.dtype != np.uint8 or obj.shape != (h, w):
        got = (f"{obj.dtype} array of shape {obj.shape}" if isinstance(obj, np.ndarray)
               else type(obj).__name__)
        raise ValueError(f"{name} must be a uint8 array of shape {(h, w)}, got {got}")
