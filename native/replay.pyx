# Frame-ring replay memory: each preprocessed frame is stored once; observation stacks, n-step
# returns and next observations are gathered at sample time, without the GIL.
#
# Layout. Slot i of a ring of `capacity` slots holds one frame and what happened after it:
#   frame[i]   the newest frame of observation o_t
#   action[i]  the action taken in o_t, reward[i] the (already clipped) reward it earned
#   flags[i]   FIRST (o_t begins an episode), HAS_TRANSITION (action/reward are set),
#              TERMINATED (the step ended the game), TRUNCATED (the step hit a time limit)
# Every episode also writes its final observation into a slot of its own (no transition), so a
# truncated episode still bootstraps from its last observation.
#
# Streams. The ring is shared by S >= 1 writers (one per environment), each with its own
# episodes. Stream s owns the contiguous sub-ring of P = capacity // S slots [s * P, (s + 1) * P)
# (the up to S - 1 slots that do not divide evenly are not used; `capacity` is then P * S).
# Within its sub-ring a stream is exactly a single-stream ring of capacity P: its frames are
# addressed by a logical index L (the count of frames that stream wrote before it) and live in
# physical slot s * P + L % P; everything below (live range, validity, padding, n-step windows)
# holds per stream, and nothing of a stream ever reads another's slots. Why sub-rings rather
# than interleaving the streams' frames in one sequence: each stream keeps the single ring's
# invariants unchanged (an episode's frames are consecutive slots, a stack or n-step window
# never steps over another env's frame), and each stream's next slot is known in advance
# (next_slots()), so a worker process can write its env's frames straight into the shared ring.
# Sampling still sees one replay: one uniform draw over the union of the streams' live ranges,
# or one sum-tree over all P * S slots. A transition is named by its global index
# G = L * S + s (G = L when S = 1).
#
# Live range. The slot after a stream's newest frame is handed out by frame_slot() for its next
# write, so it is never sampled: live = [max(0, total_s - P + 1), total_s - 1]. The slot after
# that one (next_slots()[s, 1]) still holds the stream's oldest live frame until the next write
# takes it out of the live range; it is read only when that frame begins an episode.
#
# A transition L is valid when it has an action, its stack history (back to the episode's first
# frame, at most stack - 1 frames) is live, and its n-step window is complete: it reaches n steps
# with the bootstrap frame written, or it ends early at a terminal or a truncation.
#
# Snapshots. state_dict() / load_state_dict() save and restore the exact state (frames, per-slot
# fields, per-stream counters, priorities and the sampler's RNG) as plain numpy arrays; the
# sum-tree is rebuilt from the priorities on load, bit for bit (see load_state_dict). Version 1
# snapshots (single stream, scalar counters) still load into a replay with streams=1.

from cpython.long cimport PyLong_AsLongLongAndOverflow
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

# The default stream, compared by identity on the write path (CPython caches small ints).
cdef object _ZERO = 0

# A draw that lands on a zero leaf through float rounding is redrawn at most this often.
cdef int PER_REDRAWS = 64

# Version of the state_dict() layout. load_state_dict() reads this one and version 1 (a
# single-stream replay's, with scalar counters; it loads into streams=1 only).
SNAPSHOT_VERSION = 2


cdef class Batch:
    """One sampled batch, ready for ``torch.from_numpy`` (no copy).

    obs, next_obs: uint8 (B, stack, H, W); action: int64 (B,); reward: float32 (B,) n-step
    discounted return; discount: float32 (B,) gamma**m for an m-step window, 0 after a terminal;
    index: int64 (B,) global indices (for update_priorities; the logical index when the replay
    has one stream); weight: float32 (B,) importance weights (all 1 for uniform sampling).

    Batch(batch_size, stack, height, width, channels_last=False, buffers=None). Every array is
    C-contiguous, except obs and next_obs with channels_last=True: they are then
    (B, stack, H, W)-shaped views (same shape, same values) of C-contiguous (B, H, W, stack)
    buffers, i.e. each pixel's stack of frames lies together in memory. ``torch.from_numpy`` of
    such a view is a tensor that is contiguous in ``torch.channels_last`` memory format, so a
    network with channels_last weights reads it without permuting the bytes. ``channels_last``
    says which layout it is.

    buffers: None (the Batch allocates its arrays) or a dict of caller-owned numpy arrays to use
    instead, e.g. pinned host memory that a GPU learner copies from, so that sampling writes
    straight into it. Keys (any subset; the rest are allocated): "obs" and "next_obs" uint8 of
    the buffer layout, (B, stack, H, W), or (B, H, W, stack) when channels_last; "action" int64
    (B,); "reward", "discount" and "weight" float32 (B,); "index" int64 (B,). Each must be a
    writable, C-contiguous numpy array of exactly that dtype and shape.
    """

    cdef readonly object obs, next_obs, action, reward, discount, index, weight
    cdef readonly int batch_size
    cdef readonly bint channels_last
    cdef object _obs_buf, _next_buf   # the C-contiguous buffers behind obs and next_obs

    def __init__(self, int batch_size, int stack, int height, int width, bint channels_last=False,
                 buffers=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size}")
        self.batch_size = batch_size
        self.channels_last = channels_last
        frames = (batch_size, height, width, stack) if channels_last else (
            batch_size, stack, height, width)
        want = {"obs": (np.uint8, frames), "next_obs": (np.uint8, frames),
                "action": (np.int64, (batch_size,)), "reward": (np.float32, (batch_size,)),
                "discount": (np.float32, (batch_size,)), "index": (np.int64, (batch_size,)),
                "weight": (np.float32, (batch_size,))}
        given = {}
        if buffers is not None:
            if not isinstance(buffers, dict):
                raise ValueError(f"buffers must be a dict of numpy arrays keyed by "
                                 f"{', '.join(want)}, got {type(buffers).__name__}")
            for key, arr in buffers.items():
                if key not in want:
                    raise ValueError(f"buffers has unknown key {key!r}; the keys are "
                                     f"{', '.join(want)}")
                _check_buffer(arr, key, want[key][0], want[key][1], channels_last)
            given = buffers
        arrays = {key: given[key] if key in given else np.empty(shape, dtype)
                  for key, (dtype, shape) in want.items()}
        self._obs_buf, self._next_buf = arrays["obs"], arrays["next_obs"]
        if channels_last:
            self.obs = self._obs_buf.transpose(0, 3, 1, 2)
            self.next_obs = self._next_buf.transpose(0, 3, 1, 2)
        else:
            self.obs, self.next_obs = self._obs_buf, self._next_buf
        self.action = arrays["action"]
        self.reward = arrays["reward"]
        self.discount = arrays["discount"]
        self.index = arrays["index"]
        self.weight = arrays["weight"]

    def __repr__(self):
        layout = ", channels_last" if self.channels_last else ""
        return f"Batch(batch_size={self.batch_size}, obs={self.obs.shape}{layout})"


cdef _check_buffer(arr, str key, dtype, tuple shape, bint channels_last):
    want = np.dtype(dtype)
    if (isinstance(arr, np.ndarray) and arr.dtype == want and arr.shape == shape
            and arr.flags.c_contiguous and arr.flags.writeable):
        return
    if isinstance(arr, np.ndarray):
        got = f"a {arr.dtype} array of shape {arr.shape}"
        if not arr.flags.c_contiguous:
            got += ", not C-contiguous"
        if not arr.flags.writeable:
            got += ", read-only"
    else:
        got = type(arr).__name__
    layout = ""
    if key in ("obs", "next_obs"):
        layout = " (B, H, W, stack) for channels_last" if channels_last else " (B, stack, H, W)"
    raise ValueError(f"buffers[{key!r}] must be a writable C-contiguous {want} array of shape "
                     f"{shape}{layout}, got {got}")


cdef inline bint _in_unit(double x):
    return 0.0 <= x <= 1.0


cdef class FrameReplay:
    """Circular replay memory of preprocessed frames with uniform or prioritized sampling.

    FrameReplay(capacity, frame_shape=(84, 84), stack=4, n_step=1, gamma=0.99,
                prioritized=False, alpha=0.6, seed=0, streams=1, frames=None)

    Writing an episode: ``reset(first_frame)``, then ``add(action, reward, terminated, truncated,
    next_frame)`` per step. A frame argument of None means the frame is already in
    ``frame_slot()`` (the preprocessing kernel can write there directly). Frames before an
    episode's first frame are padded with that first frame (as gymnasium's FrameStack does).

    streams: how many writers (environments) share the ring, S >= 1. Each owns a sub-ring of
    P = capacity // S slots (``stream_capacity``; ``capacity`` becomes P * S, dropping up to
    S - 1 of the requested slots) and writes through the same calls with ``stream=s``: its
    episodes, stacks and n-step windows never mix with another stream's. Sampling draws over the
    valid transitions of all streams; a transition is named by its global index G = L * S + s,
    L its logical index within stream s (G = L for one stream).

    frames: None (the replay allocates its ring) or a writable C-contiguous uint8 array of shape
    (P * S, H, W), e.g. a view of shared memory that worker processes write frames into; the
    replay uses it as its ring without a copy (and keeps a reference to it).
    """

    cdef readonly int64_t capacity        # slots in use: stream_capacity * streams
    cdef readonly int64_t stream_capacity # P: the slots of one stream's sub-ring
    cdef readonly int streams
    cdef readonly int stack, n_step, height, width
    cdef readonly double gamma, alpha
    cdef readonly bint prioritized
    cdef readonly int64_t total           # frames written so far, over all streams
    cdef readonly double max_priority     # largest priority given so far (before the alpha power)

    cdef object _frames, _action, _reward, _flags, _prio, _tree
    cdef object _totals, _live, _open, _open_eps, _cum   # numpy arrays behind the pointers below
    cdef int64_t P
    cdef uint8_t* frames
    cdef uint8_t* actions
    cdef float* rewards
    cdef uint8_t* flags
    cdef float* prio                      # priority ** alpha of each slot
    cdef double* tree
    cdef int64_t leaves
    cdef int64_t frame_bytes
    # Per stream s:
    cdef int64_t* totals                  # frames written (logical index of its next slot)
    cdef int64_t* live_transitions        # live slots with HAS_TRANSITION
    cdef uint8_t* episode_open            # the newest frame awaits add()
    cdef int64_t* episode_transitions     # transitions in the open episode
    cdef int64_t* cum                     # scratch for sample(): prefix sums of the live spans
    cdef uint64_t rng[4]
    cdef double* gamma_pow                # gamma ** j for j = 0..n_step

    def __cinit__(self):
        self.gamma_pow = NULL

    def __init__(self, capacity, frame_shape=(84, 84), int stack=4, int n_step=1,
                 double gamma=0.99, bint prioritized=False, double alpha=0.6, seed=0,
                 streams=1, frames=None):
        if stack < 1:
            raise ValueError(f"stack must be >= 1, got {stack}")
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        if (not isinstance(streams, (int, np.integer)) or isinstance(streams, bool)
                or not 1 <= streams <= 2 ** 20):
            raise ValueError(f"streams must be an int >= 1 (one per environment, at most 2**20), "
                             f"got {streams!r}")
        S = int(streams)
        try:
            capacity = int(capacity)
        except (TypeError, ValueError):
            raise ValueError(f"capacity must be an int, got {capacity!r}") from None
        P = capacity // S
        if P <= stack + n_step:
            raise ValueError(
                f"capacity must be at least streams * (stack + n_step + 1) = {S} * "
                f"{stack + n_step + 1} = {S * (stack + n_step + 1)} (each stream's "
                f"capacity // streams slots need room for one full stack and its n-step window), "
                f"got capacity={capacity} with streams={S}"
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
        C = P * S
        if frames is not None:
            if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8
                    and frames.shape == (C, h, w) and frames.flags.c_contiguous
                    and frames.flags.writeable):
                got = (f"a {frames.dtype} array of shape {frames.shape}"
                       + ("" if frames.flags.c_contiguous else ", not C-contiguous")
                       + ("" if frames.flags.writeable else ", read-only")
                       if isinstance(frames, np.ndarray) else type(frames).__name__)
                raise ValueError(
                    f"frames must be a writable C-contiguous uint8 array of shape "
                    f"(stream_capacity * streams, H, W) = {(C, h, w)} (capacity {capacity} // "
                    f"streams {S} = {P} slots a stream), got {got}")

        self.capacity, self.stream_capacity, self.P, self.streams = C, P, P, S
        self.stack, self.n_step = stack, n_step
        self.height, self.width, self.gamma = h, w, gamma
        self.prioritized, self.alpha = prioritized, alpha
        self.frame_bytes = h * w
        # np.empty: pages are touched only as the ring fills, so a large ring costs nothing up front.
        self._frames = np.empty((C, h, w), np.uint8) if frames is None else frames
        self._action = np.zeros(C, np.uint8)
        self._reward = np.zeros(C, np.float32)
        self._flags = np.zeros(C, np.uint8)
        self.frames = _data_u8(self._frames)
        self.actions = _data_u8(self._action)
        self.rewards = _data_f32(self._reward)
        self.flags = _data_u8(self._flags)
        self.leaves = 1
        if prioritized:
            while self.leaves < C:
                self.leaves *= 2
            self._prio = np.zeros(C, np.float32)
            self._tree = np.zeros(2 * self.leaves, np.float64)
            self.prio = _data_f32(self._prio)
            self.tree = _data_f64(self._tree)
        self.max_priority = 1.0
        self.gamma_pow = <double*> PyMem_Malloc((n_step + 1) * sizeof(double))
        if self.gamma_pow == NULL:
            raise MemoryError()
        for j in range(n_step + 1):
            self.gamma_pow[j] = pow(gamma, j)
        self._totals = np.zeros(S, np.int64)
        self._live = np.zeros(S, np.int64)
        self._open = np.zeros(S, np.uint8)
        self._open_eps = np.zeros(S, np.int64)
        self._cum = np.zeros(S + 1, np.int64)
        self.totals = _data_i64(self._totals)
        self.live_transitions = _data_i64(self._live)
        self.episode_open = _data_u8(self._open)
        self.episode_transitions = _data_i64(self._open_eps)
        self.cum = _data_i64(self._cum)
        self.total = 0
        rng_seed(self.rng, <uint64_t> int(seed))

    def __dealloc__(self):
        PyMem_Free(self.gamma_pow)

    # ------------------------------------------------------------------ sizes
    @property
    def frame_shape(self):
        return (self.height, self.width)

    @property
    def live_start(self):
        """Oldest logical index of stream 0 that may be read (see stream_live_start)."""
        return self._live_start(0)

    def stream_live_start(self, stream):
        """Oldest logical index of `stream` that may be read."""
        return self._live_start(self._stream(stream))

    @property
    def stream_totals(self):
        """Frames written by each stream (each one's next logical index), a tuple of S ints."""
        return tuple(int(self.totals[s]) for s in range(self.streams))

    @property
    def ring(self):
        """The frame ring itself, a read-only uint8 view (capacity, H, W): row s * P + L % P holds
        stream s's frame L (P = stream_capacity). For mirroring it elsewhere (a GPU copy that
        `sample(..., rows=...)` indexes); rows below a stream's total are final until it wraps."""
        view = self._frames.view()
        view.flags.writeable = False
        return view

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
        streams = f", streams={self.streams}" if self.streams > 1 else ""
        return (f"FrameReplay(capacity={self.capacity}{streams}, frame_shape={self.frame_shape}, "
                f"stack={self.stack}, n_step={self.n_step}, gamma={self.gamma}, {kind}, "
                f"valid={self.num_valid()})")

    cdef inline int _stream(self, stream) except -1:
        """The stream index `stream` as a C int, or ValueError naming it and the range."""
        if stream is _ZERO:                     # the default (small ints are one object)
            return 0
        cdef int overflow = 0
        cdef long long s = -1
        if type(stream) is int:
            s = PyLong_AsLongLongAndOverflow(stream, &overflow)
        elif isinstance(stream, np.integer):
            s = PyLong_AsLongLongAndOverflow(int(stream), &overflow)
        else:
            overflow = 1
        if overflow or not 0 <= s < self.streams:
            raise ValueError(f"stream must be an int in [0, {self.streams - 1}] (this replay has "
                             f"streams={self.streams}), got {stream!r}")
        return <int> s

    # ------------------------------------------------------------------ writing
    def frame_slot(self, stream=0):
        """Writable (H, W) view of the slot that `stream`'s next reset()/add() stores its frame
        in (row next_slots()[stream, 0] of the ring)."""
        cdef int s = self._stream(stream)
        return self._frames[self._slot(s, self.totals[s])]

    def next_slots(self, out=None):
        """Where each stream's next two frames go: int64 (S, 2), physical ring rows.

        [s, 0] is the row that stream s's next reset()/add() stores its frame in (the row that
        frame_slot(s) views), [s, 1] the row of the write after that one in the same stream (its
        sub-ring's next slot, wrapping). A worker process that owns stream s writes a step's new
        frame into row [s, 0] and, when that step ended the episode and the env reset, the new
        episode's first frame into row [s, 1]; the parent then calls add(..., stream=s) and
        reset(stream=s) with no frame. out: a C-contiguous int64 (S, 2) array to fill.

        Row [s, 1] holds stream s's oldest live frame until add() or reset() of stream s takes
        it out of the live range: a frame written there before then may be read by a sample()
        or gather() running meanwhile (only when that oldest frame begins an episode).
        """
        cdef int S = self.streams
        if out is None:
            out = np.empty((S, 2), np.int64)
        elif not (isinstance(out, np.ndarray) and out.dtype == np.int64 and out.shape == (S, 2)
                  and out.flags.c_contiguous and out.flags.writeable):
            got = (f"a {out.dtype} array of shape {out.shape}" if isinstance(out, np.ndarray)
                   else type(out).__name__)
            raise ValueError(f"out must be a writable C-contiguous int64 array of shape {(S, 2)}, "
                             f"got {got}")
        cdef int64_t[:, ::1] o = out
        cdef int s
        for s in range(S):
            o[s, 0] = self._slot(s, self.totals[s])
            o[s, 1] = self._slot(s, self.totals[s] + 1)
        return out

    def reset(self, frame=None, stream=0):
        """Begin an episode of `stream` with its first frame (None: already in frame_slot(stream)).

        Resetting while the stream's episode is still open ends that episode as truncated at its
        last step.
        """
        cdef int s = self._stream(stream)
        if frame is not None:
            _check_frame(frame, self.height, self.width, "frame")
        if self.episode_open[s] and self.episode_transitions[s] > 0:
            self.flags[self._slot(s, self.totals[s] - 2)] |= TRUNCATED
        self._write_frame(frame, FIRST, s)
        self.episode_open[s] = True
        self.episode_transitions[s] = 0
        self._refresh_edges(s)

    def add(self, action, reward, terminated, truncated, next_frame=None, stream=0):
        """Record one step of `stream`'s open episode and the frame that followed it."""
        cdef int s = self._stream(stream)
        if not self.episode_open[s]:
            where = f" of stream {s}" if self.streams > 1 else ""
            raise ValueError(f"add() needs an open episode{where}: call reset(first_frame) first "
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
        cdef int64_t slot = self._slot(s, self.totals[s] - 1)
        if next_frame is not None:
            _check_frame(next_frame, self.height, self.width, "next_frame")
        self.actions[slot] = <uint8_t> a
        self.rewards[slot] = <float> r
        self.flags[slot] |= HAS_TRANSITION | (TERMINATED if terminated else 0) | (TRUNCATED if truncated else 0)
        self.live_transitions[s] += 1
        self.episode_transitions[s] += 1
        if self.prioritized:
            self.prio[slot] = <float> pow(self.max_priority, self.alpha)
        self._write_frame(next_frame, 0, s)
        if terminated or truncated:
            self.episode_open[s] = False
        self._refresh_edges(s)

    cdef _write_frame(self, frame, uint8_t flag, int s):
        """Store the frame (already checked) of stream s's next slot and hand out the slot after."""
        cdef int64_t t = self.totals[s]
        cdef int64_t slot = self._slot(s, t)
        if frame is not None:
            self._frames[slot] = frame
        # The oldest live slot leaves the live range now (its physical slot is handed out next).
        cdef int64_t leaving = t + 1 - self.P
        if leaving >= 0:
            if self.flags[self._slot(s, leaving)] & HAS_TRANSITION:
                self.live_transitions[s] -= 1
            if self.prioritized:
                tree_set(self.tree, self.leaves, self._slot(s, leaving), 0.0)
        self.flags[slot] = flag
        self.totals[s] = t + 1
        self.total += 1

    cdef void _refresh_edges(self, int s) noexcept:
        """Recompute the sum-tree leaves of stream s whose validity may have changed with its
        last write."""
        if not self.prioritized:
            return
        cdef int64_t L
        cdef int64_t start = self._live_start(s)
        cdef int64_t t = self.totals[s]
        for L in range(max(start, t - 2 - self.n_step), t):
            self._refresh(s, L)
        for L in range(start, min(start + self.stack, t)):
            self._refresh(s, L)

    cdef inline void _refresh(self, int s, int64_t L) noexcept nogil:
        cdef int64_t slot = self._slot(s, L)
        cdef int m
        cdef bint term
        tree_set(self.tree, self.leaves, slot,
                 self.prio[slot] if self._window(s, L, &m, &term) else 0.0)

    # ------------------------------------------------------------------ validity
    cdef inline int64_t _slot(self, int s, int64_t L) noexcept nogil:
        """Physical slot of stream s's logical index L."""
        return s * self.P + L % self.P

    cdef inline int64_t _live_start(self, int s) noexcept nogil:
        return max(<int64_t> 0, self.totals[s] - self.P + 1)

    cdef inline bint _decode(self, int64_t G, int* s, int64_t* L) noexcept nogil:
        """Split a global index into (stream, logical index); False for a negative G."""
        if G < 0:
            return False
        if self.streams == 1:                   # no 64-bit divisions for the common case
            s[0] = 0
            L[0] = G
        else:
            s[0] = <int> (G % self.streams)
            L[0] = G // self.streams
        return True

    cdef inline int64_t _episode_floor(self, int s, int64_t L) noexcept nogil:
        """Lowest frame index the stack ending at L reads: L - (stack - 1), or the episode start.

        Below the live range it returns live_start - 1 (L is then not a valid transition).
        """
        cdef int64_t j = L
        # Never below start - 1: a floor under the live range makes L invalid whatever the stale
        # slots under it hold, and the walk must not reach logical index -1 (before the buffer).
        cdef int64_t lowest = max(L - (self.stack - 1), self._live_start(s) - 1)
        while j > lowest and not (self.flags[self._slot(s, j)] & FIRST):
            j -= 1
        return j

    cdef inline bint _window(self, int s, int64_t L, int* steps, bint* terminal) noexcept nogil:
        """True if stream s's L is a valid transition; sets its window length and whether it ends
        in a terminal."""
        cdef int64_t start = self._live_start(s)
        cdef int64_t last = self.totals[s] - 1
        cdef int j
        cdef uint8_t f
        if L < start or L >= last:
            return False
        if not (self.flags[self._slot(s, L)] & HAS_TRANSITION):
            return False
        if self._episode_floor(s, L) < start:
            return False
        for j in range(self.n_step):
            if L + j >= last:
                return False                    # step L + j not recorded yet
            f = self.flags[self._slot(s, L + j)]
            if not (f & HAS_TRANSITION):
                return False
            if f & (TERMINATED | TRUNCATED):
                steps[0] = j + 1
                terminal[0] = (f & TERMINATED) != 0
                return True
        steps[0] = self.n_step
        terminal[0] = False
        return L + self.n_step <= last          # bootstrap frame written

    cdef inline bint _valid(self, int64_t G) noexcept nogil:
        cdef int s, m
        cdef int64_t L
        cdef bint term
        return self._decode(G, &s, &L) and self._window(s, L, &m, &term)

    cdef int64_t _num_valid(self, int s) noexcept nogil:
        cdef int64_t start = self._live_start(s)
        cdef int64_t t = self.totals[s]
        cdef int64_t n = self.live_transitions[s]
        cdef int64_t L
        cdef int64_t low_end = min(start + self.stack - 1, t)
        cdef int64_t high_begin = max(low_end, t - 1 - self.n_step)
        cdef int m
        cdef bint term
        # Only the first stack-1 live slots (history cut off) and the last n_step + 1 slots
        # (window incomplete) can hold a recorded transition that is not valid.
        for L in range(start, low_end):
            if ((self.flags[self._slot(s, L)] & HAS_TRANSITION)
                    and not self._window(s, L, &m, &term)):
                n -= 1
        for L in range(high_begin, t):
            if ((self.flags[self._slot(s, L)] & HAS_TRANSITION)
                    and not self._window(s, L, &m, &term)):
                n -= 1
        return n

    cpdef int64_t num_valid(self):
        """Transitions that can be sampled now, over all streams (exact; O(S * (stack +
        n_step)))."""
        cdef int64_t n = 0
        cdef int s
        for s in range(self.streams):
            n += self._num_valid(s)
        return n

    cdef int64_t _valid_into(self, int64_t* out) noexcept nogil:
        """Every valid global index into out (stream by stream, not sorted); returns the count."""
        cdef int64_t n = 0
        cdef int64_t L
        cdef int s, m
        cdef bint term
        for s in range(self.streams):
            for L in range(self._live_start(s), self.totals[s]):
                if self._window(s, L, &m, &term):
                    out[n] = L * self.streams + s
                    n += 1
        return n

    def valid_indices(self):
        """Every valid global index, ascending (O(capacity); for tests and inspection)."""
        out = self._all_valid()
        if self.streams > 1:
            out.sort()
        return out

    cdef _all_valid(self):
        """Every valid global index, stream by stream (an array as long as the live slots,
        trimmed to the count)."""
        out = np.empty(self._spans(self.cum) + 1, np.int64)
        cdef int64_t* o = _data_i64(out)
        cdef int64_t n
        with nogil:
            n = self._valid_into(o)
        return out[:n]

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size, double beta=0.4, Batch out=None, bint channels_last=False,
               rows=None):
        """Draw batch_size transitions (with replacement): uniformly, or by priority ** alpha.

        Uniform draws are uniform over the valid transitions of all streams together; prioritized
        ones follow one sum-tree over all streams' slots. beta: importance-weight exponent for
        prioritized sampling, in [0, 1]; weights are (N * P(i)) ** -beta divided by the batch's
        largest weight, N the valid transitions of all streams. out: a Batch of the same
        batch_size to fill instead of allocating a new one. channels_last: the layout of the
        new Batch's obs and next_obs when out is None (see Batch); a given out keeps its own
        layout, whatever channels_last says. Both layouts hold the same values.

        rows: None, or a writable C-contiguous int64 array (batch_size, 2, stack) to receive the
        ring rows (see `ring`) of each transition's stacks instead of their frames: rows[i, 0, j]
        is frame j (0 = oldest) of obs i, rows[i, 1, j] of next_obs i, first-frame padding
        included, so ring[rows[i, 0]] is obs i. Then obs and next_obs of the batch are not
        written (a mirror of the ring gathers them); every other field is.
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
        self._check_rows(rows, B)
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
        self._fill(out, rows)
        return out

    def draw_valid(self, n, seed):
        """min(n, num_valid()) distinct valid global indices, uniformly without replacement,
        sorted ascending (int64).

        Drawn by a fresh xoshiro256** generator seeded with `seed` (the same seed and replay
        give the same indices; the sampler's RNG is not touched). Expected cost O(n): uniform
        draws over the live ranges, rejected when invalid or already drawn; when n is more than
        half of the valid transitions it enumerates them instead (O(capacity)).
        """
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        if (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)
                or not 0 <= seed < 2 ** 64):
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        cdef int64_t valid = self.num_valid()
        cdef int64_t k = min(int(n), valid)
        out = np.empty(k, np.int64)
        if k == 0:
            return out
        cdef int64_t[::1] o = out
        cdef uint64_t rng[4]
        rng_seed(rng, <uint64_t> int(seed))
        cdef int64_t* every
        cdef int64_t nall
        cdef int64_t* cum_p
        cdef int64_t* table_p
        cdef int bits
        if 2 * k > valid:
            # Enumerate, then the first k of a partial Fisher-Yates shuffle.
            all_valid = self._all_valid()          # num_valid() entries: it is exact
            every, nall = _data_i64(all_valid), all_valid.shape[0]
            with nogil:
                _partial_shuffle(rng, every, nall, k)
            out[:] = all_valid[:k]
        else:
            cum = np.empty(self.streams + 1, np.int64)
            bits = max(1, (2 * k - 1).bit_length())
            table = np.full(1 << bits, -1, np.int64)     # an open-addressing set, -1 = empty
            cum_p, table_p = _data_i64(cum), _data_i64(table)
            with nogil:
                self._draw_distinct(rng, cum_p, table_p, bits, &o[0], k)
        out.sort()
        return out

    cdef void _draw_distinct(self, uint64_t* rng, int64_t* cum, int64_t* table, int bits,
                             int64_t* out, int64_t k) noexcept nogil:
        """k distinct valid global indices: uniform draws, the invalid and the repeated ones
        rejected (table: an open-addressing set of 2**bits slots, all -1, 2**bits >= 2k)."""
        cdef uint64_t span = <uint64_t> self._spans(cum)
        cdef uint64_t mask = (<uint64_t> 1 << bits) - 1
        cdef uint64_t h
        cdef int64_t G, have = 0
        while have < k:
            G = self._draw_one(rng, cum, span)
            if G < 0:
                continue
            h = (<uint64_t> G * <uint64_t> 0x9E3779B97F4A7C15) >> (64 - bits)
            while table[h] != -1 and table[h] != G:
                h = (h + 1) & mask
            if table[h] == G:
                continue
            table[h] = G
            out[have] = G
            have += 1

    def gather(self, indices, Batch out=None, bint channels_last=False, rows=None):
        """Batch of the given valid global indices (weights 1); for inspection and tests.

        out, channels_last and rows as for sample(): a given out keeps its own layout.
        """
        idx = np.ascontiguousarray(indices, dtype=np.int64)
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"indices must be a non-empty 1-D sequence of ints, got shape {idx.shape}")
        cdef const int64_t[::1] iv = idx
        cdef Py_ssize_t i, bad = -1
        with nogil:
            for i in range(iv.shape[0]):
                if not self._valid(iv[i]):
                    bad = i
                    break
        if bad >= 0:
            raise ValueError(f"index {idx[bad]} is not a valid transition now "
                             f"{self._describe(idx[bad])}")
        out = self._batch_for(idx.size, out, channels_last)
        self._check_rows(rows, idx.size)
        out.index[:] = idx
        out.weight[:] = 1.0
        self._fill(out, rows)
        return out

    cdef _check_rows(self, rows, Py_ssize_t B):
        if rows is None:
            return
        shape = (B, 2, self.stack)
        if not (isinstance(rows, np.ndarray) and rows.dtype == np.int64 and rows.shape == shape
                and rows.flags.c_contiguous and rows.flags.writeable):
            got = (f"a {rows.dtype} array of shape {rows.shape}"
                   if isinstance(rows, np.ndarray) else type(rows).__name__)
            raise ValueError(f"rows must be a writable C-contiguous int64 array of shape "
                             f"(batch_size, 2, stack) = {shape}, got {got}")

    cdef str _describe(self, G):
        """Where a global index points, for error messages."""
        S = self.streams
        if S == 1:
            return (f"(valid: valid_indices(), live range [{self._live_start(0)}, "
                    f"{self.totals[0] - 1}])")
        if G < 0:
            return "(valid: valid_indices(); global indices are >= 0)"
        s, L = int(G) % S, int(G) // S
        return (f"(stream {s}, logical index {L}; valid: valid_indices(); stream {s}'s live "
                f"range is [{self._live_start(s)}, {self.totals[s] - 1}])")

    cdef _fill(self, Batch out, rows=None):
        """Gather every field of `out` for the valid global indices already in out.index (with
        `rows`, checked by _check_rows: the stacks' ring rows into it instead of their frames)."""
        # The buffers: (B, stack, H, W), or (B, H, W, stack) for a channels_last batch.
        cdef uint8_t[:, :, :, ::1] obs = out._obs_buf
        cdef uint8_t[:, :, :, ::1] nxt = out._next_buf
        cdef int64_t[::1] act = out.action
        cdef float[::1] ret = out.reward
        cdef float[::1] disc = out.discount
        cdef int64_t[::1] idx = out.index
        cdef int64_t[:, :, ::1] rv
        cdef int64_t* row_out = NULL
        if rows is not None:
            rv = rows
            row_out = &rv[0, 0, 0]
        with nogil:
            self._gather(out.batch_size, &idx[0], &obs[0, 0, 0, 0], &nxt[0, 0, 0, 0], &act[0],
                         &ret[0], &disc[0], out.channels_last, row_out)

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

    cdef int64_t _spans(self, int64_t* cum) noexcept nogil:
        """cum[s] = live slots of the streams before s (cum[S] = all of them); returns cum[S]."""
        cdef int s
        cum[0] = 0
        for s in range(self.streams):
            cum[s + 1] = cum[s] + (self.totals[s] - self._live_start(s))
        return cum[self.streams]

    cdef inline int64_t _draw_one(self, uint64_t* rng, const int64_t* cum,
                                  uint64_t span) noexcept nogil:
        """One uniform draw over the union of the live ranges (span = cum[S] > 0): its global
        index if it is a valid transition, else -1."""
        cdef uint64_t u = rng_below(rng, span)
        cdef int lo = 0, hi = self.streams, mid
        cdef int m
        cdef bint term
        while hi - lo > 1:                      # the stream s with cum[s] <= u < cum[s + 1]
            mid = (lo + hi) >> 1
            if <uint64_t> cum[mid] <= u:
                lo = mid
            else:
                hi = mid
        cdef int64_t L = self._live_start(lo) + <int64_t> (u - <uint64_t> cum[lo])
        if self._window(lo, L, &m, &term):
            return L * self.streams + lo
        return -1

    cdef void _draw_uniform(self, int B, int64_t* idx) noexcept nogil:
        cdef uint64_t span = <uint64_t> self._spans(self.cum)
        cdef int64_t G
        cdef int i
        for i in range(B):
            # Rejection: exact uniform over valid indices; invalid ones are a few per episode
            # and at the two ends of each stream's range, so a redraw is rare.
            while True:
                G = self._draw_one(self.rng, self.cum, span)
                if G >= 0:
                    break
            idx[i] = G

    cdef bint _draw_prioritized(self, int B, double beta, int64_t valid, int64_t* idx,
                                float* wgt) noexcept nogil:
        cdef double total = self.tree[1]
        cdef double p, wmax = 0.0
        cdef int64_t slot, start, L
        cdef int i, s, tries
        for i in range(B):
            for tries in range(PER_REDRAWS):
                slot = tree_find(self.tree, self.leaves, rng_uniform(self.rng) * total)
                p = self.tree[self.leaves + slot]
                if p > 0.0 and slot < self.capacity:
                    break
            else:
                return False
            # The stream that owns the slot, and its live logical index there.
            s = <int> (slot // self.P)
            slot -= s * self.P
            start = self._live_start(s)
            L = start + ((slot - start % self.P) + self.P) % self.P
            idx[i] = L * self.streams + s
            wgt[i] = <float> pow(valid * (p / total), -beta)
            if wgt[i] > wmax:
                wmax = wgt[i]
        for i in range(B):
            wgt[i] = <float> (wgt[i] / wmax)
        return True

    cdef void _gather(self, int B, const int64_t* idx, uint8_t* obs, uint8_t* nxt, int64_t* act,
                      float* ret, float* disc, bint channels_last,
                      int64_t* rows) noexcept nogil:
        """Fill B transitions; obs and nxt are (B, stack, H, W), or (B, H, W, stack) when
        channels_last (the same frames, first-frame padding included, interleaved per pixel).
        With rows (not NULL, (B, 2, stack)) the stacks' ring rows go there instead of frames."""
        cdef int i, j, m = 0, s = 0
        cdef bint term = False
        cdef int64_t L = 0, floor
        cdef double g
        cdef int64_t stack_bytes = self.stack * self.frame_bytes
        # (Software prefetching of the next transitions' frames was measured: no gain; the
        # hardware prefetcher already streams each 7 KB frame.)
        for i in range(B):
            self._decode(idx[i], &s, &L)
            self._window(s, L, &m, &term)
            floor = self._episode_floor(s, L)
            # The bootstrap observation belongs to the same episode, so it shares the floor.
            if rows != NULL:
                for j in range(self.stack):
                    rows[(2 * i) * self.stack + j] = self._stack_row(s, L, floor, j)
                    rows[(2 * i + 1) * self.stack + j] = self._stack_row(s, L + m, floor, j)
            elif channels_last:
                self._copy_stack_nhwc(s, L, floor, obs + i * stack_bytes)
                self._copy_stack_nhwc(s, L + m, floor, nxt + i * stack_bytes)
            else:
                self._copy_stack(s, L, floor, obs + i * stack_bytes)
                self._copy_stack(s, L + m, floor, nxt + i * stack_bytes)
            act[i] = self.actions[self._slot(s, L)]
            g = 0.0
            for j in range(m):
                g += self.gamma_pow[j] * self.rewards[self._slot(s, L + j)]
            ret[i] = <float> g
            disc[i] = 0.0 if term else <float> self.gamma_pow[m]

    cdef inline int64_t _stack_row(self, int s, int64_t L, int64_t floor, int j) noexcept nogil:
        """The ring row of frame j (0 = oldest) of the stack ending at L; below `floor`, the
        floor's."""
        cdef int64_t src = L - (self.stack - 1) + j
        if src < floor:
            src = floor                         # first-frame padding before the episode start
        return self._slot(s, src)

    cdef inline const uint8_t* _stack_frame(self, int s, int64_t L, int64_t floor,
                                            int j) noexcept nogil:
        """Frame j (0 = oldest) of the stack ending at L; below `floor`, the floor's frame."""
        return self.frames + self._stack_row(s, L, floor, j) * self.frame_bytes

    cdef inline void _copy_stack(self, int s, int64_t L, int64_t floor,
                                 uint8_t* dst) noexcept nogil:
        """The stack ending at L as (stack, H, W)."""
        cdef int j
        for j in range(self.stack):
            memcpy(dst + j * self.frame_bytes, self._stack_frame(s, L, floor, j), self.frame_bytes)

    cdef inline void _copy_stack_nhwc(self, int s, int64_t L, int64_t floor,
                                      uint8_t* dst) noexcept nogil:
        """The stack ending at L as (H, W, stack): its frames interleaved per pixel."""
        cdef int j
        cdef int64_t n = self.frame_bytes
        if self.stack == 4:
            replay_interleave4(self._stack_frame(s, L, floor, 0), self._stack_frame(s, L, floor, 1),
                               self._stack_frame(s, L, floor, 2), self._stack_frame(s, L, floor, 3),
                               dst, n)
        elif self.stack == 2:
            replay_interleave2(self._stack_frame(s, L, floor, 0), self._stack_frame(s, L, floor, 1),
                               dst, n)
        elif self.stack == 1:
            memcpy(dst, self._stack_frame(s, L, floor, 0), n)
        else:
            for j in range(self.stack):
                replay_interleave_strided(self._stack_frame(s, L, floor, j), self.stack, j, dst, n)

    def current_stack(self, out=None, stream=0):
        """The acting observation of `stream`: its newest frame and the stack - 1 before it,
        (stack, H, W)."""
        cdef int s = self._stream(stream)
        if self.totals[s] == 0:
            where = f" of stream {s}" if self.streams > 1 else ""
            raise ValueError(f"current_stack() needs a frame{where}: call reset(first_frame) first")
        if out is None:
            out = np.empty((self.stack, self.height, self.width), np.uint8)
        else:
            _check_array(out, (self.stack, self.height, self.width), "out")
        cdef uint8_t[:, :, ::1] o = out
        cdef int64_t L = self.totals[s] - 1
        self._copy_stack(s, L, max(self._episode_floor(s, L), self._live_start(s)), &o[0, 0, 0])
        return out

    # ------------------------------------------------------------------ priorities
    def update_priorities(self, indices, priorities):
        """Set new priorities (e.g. |TD error| + eps) for sampled global indices.

        Indices whose slot has left the ring since they were sampled are skipped.
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
        cdef int s
        with nogil:
            for i in range(iv.shape[0]):
                if not self._decode(iv[i], &s, &L):
                    continue
                if L < self._live_start(s) or L >= self.totals[s]:
                    continue
                slot = self._slot(s, L)
                self.prio[slot] = <float> pow(pv[i], self.alpha)
                if pv[i] > self.max_priority:
                    self.max_priority = pv[i]
                self._refresh(s, L)

    def probabilities(self, indices):
        """P(i) = leaf / total for global indices (prioritized only; for tests and inspection)."""
        if not self.prioritized:
            raise ValueError("probabilities() needs a replay built with prioritized=True")
        idx = np.asarray(indices, dtype=np.int64)
        total = self.tree[1]
        S, P = self.streams, self.P
        return np.array([self.tree[self.leaves + (G % S) * P + (G // S) % P] / total
                         if total > 0 else 0.0 for G in idx.ravel().tolist()]).reshape(idx.shape)

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

        Keys (S = streams, P = stream_capacity, C = capacity = P * S, N_s = min(total[s], P) the
        slots stream s has written so far, H x W = frame_shape):

        - version int64: the layout version (SNAPSHOT_VERSION, now 2);
        - the constructor's parameters, checked on load: streams int64, capacity int64 (P * S),
          frame_shape int64 (2,), stack int64, n_step int64, gamma float64, prioritized bool,
          alpha float64;
        - frames uint8 (N_0 + ... + N_{S-1}, H, W): only the slots ever written, stream by
          stream (rows s * P to s * P + N_s of the ring), so the size follows the frames
          written, not the capacity (the whole ring once every stream has wrapped);
        - action uint8 (C,), reward float32 (C,), flags uint8 (C,): the per-slot fields;
        - prio float32 (C,): each slot's priority ** alpha (shape (0,) for a uniform replay);
          the sum-tree is not stored: load rebuilds it from prio and the flags;
        - max_priority float64, and per stream, shape (S,): total int64, live_transitions
          int64, episode_open bool, episode_transitions int64: the counters;
        - rng_state uint64 (4,): the sampler's xoshiro256** state (as ``rng_state``).

        A frame written into ``frame_slot(s)`` but not yet committed by reset()/add() is part of
        the snapshot only once stream s has wrapped (before that only its first N_s slots are).

        copy: True (default) returns arrays of its own; False returns read-only views of the
        ring where the stored rows are one block of it (one stream, or every stream but the
        last wrapped; else the frames are a copy), so a large ring's frames are not copied:
        the views follow the ring, so write them out (e.g. with numpy.savez) before the next
        reset() or add().
        """
        cdef int S = self.streams
        cdef int64_t P = self.P
        written = [int(min(self.totals[s], P)) for s in range(S)]
        if all(n == P for n in written[:S - 1]):   # one block: rows [0, (S - 1) * P + N_{S-1})
            frames = _snapshot_array(self._frames[:(S - 1) * P + written[S - 1]], copy)
        else:
            frames = np.concatenate([self._frames[s * P:s * P + written[s]] for s in range(S)])
        return {
            "version": np.asarray(SNAPSHOT_VERSION, np.int64),
            "streams": np.asarray(S, np.int64),
            "capacity": np.asarray(self.capacity, np.int64),
            "frame_shape": np.asarray((self.height, self.width), np.int64),
            "stack": np.asarray(self.stack, np.int64),
            "n_step": np.asarray(self.n_step, np.int64),
            "gamma": np.asarray(self.gamma, np.float64),
            "prioritized": np.asarray(bool(self.prioritized), np.bool_),
            "alpha": np.asarray(self.alpha, np.float64),
            "frames": frames,
            "action": _snapshot_array(self._action, copy),
            "reward": _snapshot_array(self._reward, copy),
            "flags": _snapshot_array(self._flags, copy),
            "prio": (_snapshot_array(self._prio, copy) if self.prioritized
                     else np.zeros(0, np.float32)),
            "total": self._totals.copy(),
            "max_priority": np.asarray(self.max_priority, np.float64),
            "live_transitions": self._live.copy(),
            "episode_open": self._open.astype(np.bool_),
            "episode_transitions": self._open_eps.copy(),
            "rng_state": np.array([self.rng[i] for i in range(4)], np.uint64),
        }

    def load_state_dict(self, state):
        """Restore a ``state_dict()`` into this replay (built with the same parameters).

        state: a mapping with exactly the keys of ``state_dict()``; each value a numpy array or
        anything ``numpy.asarray`` turns into one of the same dtype and shape (e.g. a CPU torch
        tensor, or an entry of ``numpy.load(..., allow_pickle=False)``). A version 1 snapshot
        (from before streams: no streams key, total, live_transitions, episode_open and
        episode_transitions 0-d) loads into a replay with streams=1.

        Everything is checked before anything is written: a missing or unknown key, a wrong
        dtype or shape, a constructor parameter that differs from this replay's, or values that
        cannot come from a replay (a negative total, a frames count other than the sum of
        min(total[s], stream_capacity), a live_transitions count that disagrees with the flags,
        ...) raise ValueError naming the key, the value and what was expected, and leave this
        replay unchanged.

        The sum-tree is rebuilt from prio: each live, valid transition's leaf is its priority
        ** alpha, every other leaf 0, and each parent the sum of its two children. A running
        replay keeps exactly that invariant (every update recomputes the parents from their
        children), so the rebuilt tree equals the saved replay's bit for bit.
        """
        st = _SnapshotReader(state)
        cdef int S = self.streams
        version = st.scalar("version", np.int64)
        if version == 1:
            if S != 1:
                raise ValueError(f"state['version'] is 1, a single-stream snapshot (from before "
                                 f"streams); it loads only into a FrameReplay with streams=1, "
                                 f"this one has streams={S}")
            st.require(_STATE_KEYS_V1)
        elif version == SNAPSHOT_VERSION:
            st.require(_STATE_KEYS)
            st.param("streams", st.scalar("streams", np.int64), S)
        else:
            raise ValueError(f"state['version'] is {version}, expected {SNAPSHOT_VERSION} (or 1, "
                             "the single-stream layout); a snapshot of another FrameReplay layout "
                             "cannot be loaded")
        st.param("capacity", st.scalar("capacity", np.int64), self.capacity)
        st.param("frame_shape", tuple(int(v) for v in st.array("frame_shape", np.int64, (2,))),
                 (self.height, self.width))
        st.param("stack", st.scalar("stack", np.int64), self.stack)
        st.param("n_step", st.scalar("n_step", np.int64), self.n_step)
        st.param("gamma", st.scalar("gamma", np.float64), self.gamma)
        st.param("prioritized", st.scalar("prioritized", np.bool_), bool(self.prioritized))
        st.param("alpha", st.scalar("alpha", np.float64), self.alpha)

        C, P = int(self.capacity), int(self.P)
        total = st.counters("total", np.int64, S, version)
        if np.any(total < 0):
            raise ValueError(f"state['total'] is {_show(total)}, expected ints >= 0")
        written = np.minimum(total, P)
        if S == 1:
            text = f"(min(total={int(total[0])}, capacity={P}), H, W)"
        else:
            text = (f"(sum over streams of min(total[s], stream_capacity={P}) with "
                    f"total={total.tolist()}, H, W)")
        frames = st.array("frames", np.uint8, (int(written.sum()), self.height, self.width), text)
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
        has = (flags & HAS_TRANSITION) != 0
        live = np.zeros(S, np.int64)
        for s in range(S):
            t, base = int(total[s]), s * P
            where = f" (stream {s})" if S > 1 else ""
            if t < P and np.any(flags[base + t:base + P]):
                raise ValueError(f"state['flags'] marks slot "
                                 f"{base + t + int(np.flatnonzero(flags[base + t:base + P])[0])}"
                                 f"{where}, which was never written (total={t}); expected 0 there")
            if t < P:
                live[s] = np.count_nonzero(has[base:base + t])
            else:
                live[s] = np.count_nonzero(has[base:base + P]) - int(has[base + t % P])
        if self.prioritized and not np.all(np.isfinite(prio) & (prio >= 0)):
            bad = prio[~(np.isfinite(prio) & (prio >= 0))][0]
            raise ValueError(f"state['prio'] holds {bad}, expected finite values >= 0")

        max_priority = st.scalar("max_priority", np.float64)
        if not (isfinite(max_priority) and max_priority >= 1.0):
            raise ValueError(f"state['max_priority'] is {max_priority}, expected a finite number "
                             ">= 1 (it starts at 1 and only grows)")
        live_transitions = st.counters("live_transitions", np.int64, S, version)
        if np.any(live_transitions != live):
            raise ValueError(f"state['live_transitions'] is {_show(live_transitions)}, but the "
                             f"flags of the live slots hold {_show(live)} transitions; expected "
                             f"{_show(live)}")
        episode_open = st.counters("episode_open", np.bool_, S, version)
        if np.any(episode_open & (total == 0)):
            raise ValueError(f"state['episode_open'] is {_show(episode_open)} with "
                             f"total={_show(total)}; expected False where total is 0 (an open "
                             "episode has written its first frame)")
        episode_transitions = st.counters("episode_transitions", np.int64, S, version)
        most = np.maximum(total - 1, 0)
        if np.any((episode_transitions < 0) | (episode_transitions > most)):
            raise ValueError(f"state['episode_transitions'] is {_show(episode_transitions)}, "
                             f"expected ints in [0, total - 1] = [0, {_show(most)}]")
        words = st.array("rng_state", np.uint64, (4,))
        if not np.any(words):
            raise ValueError("state['rng_state'] is all zero, expected four uint64 words, not all "
                             "zero (an all-zero xoshiro256** state only ever yields 0)")
        st.no_extra_keys()

        # Everything checked: write.
        offset = 0
        for s in range(S):
            n = int(written[s])
            self._frames[s * P:s * P + n] = frames[offset:offset + n]
            offset += n
        self._action[:] = action
        self._reward[:] = reward
        self._flags[:] = flags
        if self.prioritized:
            self._prio[:] = prio
        self._totals[:] = total
        self.total = int(total.sum())
        self.max_priority = max_priority
        self._live[:] = live_transitions
        self._open[:] = episode_open
        self._open_eps[:] = episode_transitions
        for i in range(4):
            self.rng[i] = int(words[i])
        if self.prioritized:
            with nogil:
                self._rebuild_tree()

    cdef void _rebuild_tree(self) noexcept nogil:
        """Every leaf from prio and validity, then every parent from its children (bottom up)."""
        cdef int64_t i, L
        cdef int s, m
        cdef bint term
        for i in range(2 * self.leaves):
            self.tree[i] = 0.0
        for s in range(self.streams):
            for L in range(self._live_start(s), self.totals[s]):
                if self._window(s, L, &m, &term):
                    self.tree[self.leaves + self._slot(s, L)] = self.prio[self._slot(s, L)]
        for i in range(self.leaves - 1, 0, -1):
            self.tree[i] = self.tree[2 * i] + self.tree[2 * i + 1]


cdef void _partial_shuffle(uint64_t* rng, int64_t* a, int64_t n, int64_t k) noexcept nogil:
    """Move a uniform k-subset of a[0:n], in uniform order, to a[0:k] (Fisher-Yates, k steps)."""
    cdef int64_t i, j, tmp
    for i in range(k):
        j = i + <int64_t> rng_below(rng, <uint64_t> (n - i))
        tmp = a[i]
        a[i] = a[j]
        a[j] = tmp


cdef object _snapshot_array(arr, bint copy):
    if copy:
        return arr.copy()
    view = arr.view()
    view.flags.writeable = False
    return view


def _show(a):
    """A per-stream counter array for a message: the value alone for one stream."""
    return a[0].item() if a.size == 1 else a.tolist()


_STATE_KEYS = ("version", "streams", "capacity", "frame_shape", "stack", "n_step", "gamma",
               "prioritized", "alpha", "frames", "action", "reward", "flags", "prio", "total",
               "max_priority", "live_transitions", "episode_open", "episode_transitions",
               "rng_state")
# Version 1 (single stream): no streams key; the per-stream counters are 0-d.
_STATE_KEYS_V1 = tuple(k for k in _STATE_KEYS if k != "streams")


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
        self.expected = _STATE_KEYS
        if "version" not in keys:
            self.require(_STATE_KEYS)

    def require(self, expected):
        self.expected = expected
        missing = [k for k in expected if k not in self.keys]
        if missing:
            raise ValueError(f"state is missing key {missing[0]!r} (a FrameReplay.state_dict() "
                             f"has keys {', '.join(expected)})")

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

    def counters(self, key, dtype, int streams, version):
        """A per-stream counter as an array of shape (streams,) (0-d in a version 1 snapshot)."""
        if version == 1:
            return self.array(key, dtype, (), "() (a 0-d array, version 1)").reshape(1)
        return self.array(key, dtype, (streams,), "(streams,)")

    def param(self, key, got, expected):
        if got != expected:
            raise ValueError(f"state[{key!r}] is {got!r}, but this replay was built with "
                             f"{key}={expected!r}; load into a FrameReplay constructed with the "
                             "same parameters")

    def no_extra_keys(self):
        extra = sorted(str(k) for k in self.keys if k not in self.expected)
        if extra:
            raise ValueError(f"state has unexpected key(s) {', '.join(map(repr, extra))} (a "
                             f"FrameReplay.state_dict() has keys {', '.join(self.expected)})")


cdef uint8_t* _data_u8(arr):
    cdef uint8_t[::1] v = arr.reshape(-1)
    return &v[0]


cdef float* _data_f32(arr):
    cdef float[::1] v = arr
    return &v[0]


cdef double* _data_f64(arr):
    cdef double[::1] v = arr
    return &v[0]


cdef int64_t* _data_i64(arr):
    cdef int64_t[::1] v = arr
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
