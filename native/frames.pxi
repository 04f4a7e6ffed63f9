# Frame preprocessing kernel: max of two raw ALE frames -> luminance -> area resize, in one pass.
#
# This file is compiled twice (frames.pyx for any CPU, frames_avx2.pyx with -mavx2 -mfma) and
# agent.native picks the AVX2 build at import when the CPU has it. Same source, same results
# within rounding; gcc only vectorises the stride-3 RGB reads when AVX2 is available, and each
# build brings its own horizontal pass (frames_hpass_scalar.pxi / frames_hpass_avx2.pxi) and
# palette-index loops (frames_palette_portable.pxi / frames_palette_avx2.pxi; see
# FramePreprocessor's docstring for that path, which the env uses).
# (An AVX2-intrinsics vertical pass was measured no faster than these loops under gcc -O3.)
#
# The arithmetic, per output row oy:
#   1. vertical:   V[j] = sum_k wy[k] * max(a[y_k, j], b[y_k, j])   over the interleaved row j
#                  (uint16, exact; wy are integer overlaps, so this vectorises as byte max + pmullw)
#   2. luminance:  S[x] = 4899 R + 9617 G + 1868 B                   (OpenCV's RGB2GRAY weights, 2^14)
#   3. horizontal: out[ox] = round(sum_t cx[ox, t] * S[sx0[ox] + t])  (cx folds in every 1/denominator)
# Area weights are exact integer overlaps: output pixel o covers [o*H, (o+1)*H) in units of 1/h source
# pixels, so every weight is an integer and the result is the true area average of the luminance. It
# differs from OpenCV's pipeline (which rounds gray to uint8 before resizing) by at most 1.
#
# Gray frames (indexed()'s pair-gray frame, and 2-D frames given to __call__, after their max) take
# _gray instead, all in integers: V[j] = sum_k wy[k] * G[y_k, j] (uint16), then
#   out[ox] = (sum_t wx[ox, t] * V[sx0[ox] + t] + D // 2) // D,   D = dx * dy (200 for 210x160 -> 84x84)
# i.e. exactly the area average of the gray frame, rounded half up (the float passes above gave
# the same but for 1 pixel in 2,000 to 3,000, at exact halves, 1 lower). The division is a multiply-high
# (exact over every reachable sum: _gray_magic, _gray_magic16). Where 255 * D + D // 2 fits 16 bits
# the horizontal sums run at every source column in 16-bit lanes, weights nonzero only where an
# output's area starts (GrayTables' dense form: SSE2 loops in the portable build, intrinsics with a
# byte-shuffle gather in the AVX2 build); otherwise a scalar 64-bit pass. Shapes no 64-bit magic
# covers (sums past 2^32 or so) keep the float path.

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memmove, memset

import math

import numpy as np

cdef struct HorizontalTables:
    # sparse form: output x reads `taps` source pixels from first[x], weights coef[x * taps + t]
    int out_width
    int taps
    const int32_t* first
    const float* coef
    # grouped form (AVX2 build): `lanes` (<= 8) outputs per group, group g's starting at output
    # lanes * g, reading a window of 8 * vecs floats from
    # group_base[g]; lane i of tap t takes window[group_index[k, i]] (k = g * taps + t), chosen
    # by masks group_mask[k, 0|1, i] (index >= 8, index >= 16); vecs = 0 when a window won't fit
    int groups
    int lanes
    int vecs
    const int32_t* group_base
    const int32_t* group_index
    const uint32_t* group_mask
    const float* group_coef


cdef inline void horizontal_row_scalar(const float* S, float* F,
                                       const HorizontalTables* ht) noexcept nogil:
    cdef int x, t
    cdef int tx = ht.taps
    cdef const float* c = ht.coef
    cdef const float* s
    cdef float acc
    if tx == 3:  # every shrink by 1x to 2x (160 -> 84 included): unrolled, short dependency chain
        for x in range(ht.out_width):
            s = S + ht.first[x]
            F[x] = (c[0] * s[0] + c[1] * s[1]) + (c[2] * s[2] + <float> 0.5)
            c = c + 3
    else:
        for x in range(ht.out_width):
            s = S + ht.first[x]
            acc = 0.5
            for t in range(tx):
                acc = acc + c[t] * s[t]
            F[x] = acc
            c = c + tx


cdef struct GrayTables:
    # The exact integer gray resize (FramePreprocessor._gray), horizontal half: output x of a
    # row is (sum_t weight[x * taps + t] * V[first[x] + t] + half) // D, the division done as
    # (s * magic) >> shift (exact for every reachable s: see _gray_magic).
    int out_width
    int taps
    const int32_t* first
    const uint16_t* weight
    uint64_t half
    uint64_t magic
    int shift
    # dense form, 16-bit lanes (dense = NULL when it does not apply): every source column i
    # gets T[i] = half + sum_t dense[t * dense_stride + i] * V[i + t], nonzero weights only at
    # the column where an output's area starts (dense_first[x]), divided (pre, magic16, post,
    # below) into scratch; output x is then scratch[dense_first[x]]. About twice the arithmetic
    # of the sparse form, in loops gcc vectorises (SSE2 in the portable build). Only when
    # 255 * D + D // 2 fits 16 bits (D = 200 for 210x160 -> 84x84).
    int in_width
    int dense_stride
    const uint16_t* dense
    const int32_t* dense_first
    uint16_t* scratch
    # AVX2 build, 32 columns a chunk (dense_stride = 32 * chunks; chunks = 0 when the output
    # row is under 16 pixels): the chunk's quotients as bytes, then one byte shuffle per 16
    # columns, dense_compact[c], packs the outputs that start there (dense_count[2c | 2c + 1]
    # of them) to the front, stored 16 bytes at a time
    int chunks
    const uint8_t* dense_compact
    const int32_t* dense_count
    # 16-bit division (dense form): n // D == mulhi(n >> pre, magic16) >> post
    uint16_t half16
    uint16_t magic16
    int pre
    int post


cdef inline void gray_row_scalar(const uint16_t* V, uint8_t* O, const GrayTables* gt) noexcept nogil:
    # Every table field in a local first: a store through O may alias them.
    cdef int x, t, w = gt.out_width, tx = gt.taps, shift = gt.shift
    cdef const int32_t* first = gt.first
    cdef const uint16_t* c = gt.weight
    cdef uint64_t half = gt.half, magic = gt.magic, s
    cdef const uint16_t* v
    if tx == 3:  # every shrink by 1x to 2x (160 -> 84 included)
        for x in range(w):
            v = V + first[x]
            s = (<uint32_t> c[0] * v[0] + <uint32_t> c[1] * v[1]) + <uint32_t> c[2] * v[2]
            O[x] = <uint8_t> (((s + half) * magic) >> shift)
            c = c + 3
    else:
        for x in range(w):
            v = V + first[x]
            s = half
            for t in range(tx):
                s = s + <uint32_t> c[t] * v[t]
            O[x] = <uint8_t> ((s * magic) >> shift)
            c = c + tx


cdef inline void gray_row_dense(const uint16_t* V, uint8_t* O, const GrayTables* gt) noexcept nogil:
    cdef int i, t, x, W = gt.in_width, w = gt.out_width, tx = gt.taps, stride = gt.dense_stride
    cdef int pre = gt.pre, post = gt.post
    cdef uint16_t half = gt.half16, magic = gt.magic16, n
    cdef const uint16_t* a0 = gt.dense
    cdef const uint16_t* a1 = a0 + stride
    cdef const uint16_t* a2 = a1 + stride
    cdef const int32_t* first = gt.dense_first
    cdef uint16_t* T = gt.scratch
    # shifted pointers, not V[i + 1]: under CPython's -fwrapv gcc will not vectorise that
    cdef const uint16_t* v1 = V + 1
    cdef const uint16_t* v2 = V + 2
    if tx == 3:
        for i in range(W):
            n = half + a0[i] * V[i] + a1[i] * v1[i] + a2[i] * v2[i]
            T[i] = <uint16_t> ((<uint32_t> (n >> pre) * magic) >> 16) >> post
    else:
        for i in range(W):
            T[i] = half + a0[i] * V[i]
        for t in range(1, tx):
            a1 = a0 + t * stride
            v1 = V + t
            for i in range(W):
                T[i] = T[i] + a1[i] * v1[i]
        for i in range(W):
            T[i] = <uint16_t> ((<uint32_t> (T[i] >> pre) * magic) >> 16) >> post
    for x in range(w):
        O[x] = <uint8_t> T[first[x]]


include "frames_palette_scalar.pxi"


# OpenCV's fixed-point RGB->gray weights (cv::COLOR_RGB2GRAY, shift 14): 0.299, 0.587, 0.114.
cdef float GRAY_ONE = 16384.0
cdef float K_R = 4899.0
cdef float K_G = 9617.0
cdef float K_B = 1868.0


def _axis_taps(int src, int dst):
    """Integer area-overlap taps for resizing one axis from src to dst pixels (dst <= src).

    Returns (first source index per output, weights[dst, taps], denominator). Weights of one
    output sum to the denominator. The tap window is shifted left at the far edge so it never
    reads past the last source pixel.
    """
    g = math.gcd(src, dst)
    denom = src // g
    taps = (src + dst - 1) // dst + 1
    taps = min(taps, src)
    first = np.zeros(dst, np.int32)
    weights = np.zeros((dst, taps), np.int32)
    for o in range(dst):
        lo, hi = o * src, (o + 1) * src
        f, last = lo // dst, (hi - 1) // dst
        start = min(f, src - taps)
        first[o] = start
        for i in range(f, last + 1):
            weights[o, i - start] = (min(hi, (i + 1) * dst) - max(lo, i * dst)) // g
    return first, weights, denom


def _shape2(value, name):
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (height, width) pair of positive ints, got {value!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be a (height, width) pair of positive ints, got {value!r}")
    return h, w


def _gray_magic(denom):
    """(half, magic, shift) with (s + half) * magic >> shift == round-half-up(s / denom) for
    every s in [0, 255 * denom], in 64-bit arithmetic; None when no such magic fits 64 bits.

    With n = s + half <= nmax, 2^shift > nmax * (denom - 1) and magic = ceil(2^shift / denom)
    = (2^shift + e) / denom, e < denom: n * magic / 2^shift = n / denom + n * e / (denom *
    2^shift), and the second term is below 1 / denom, so the floor is n // denom.
    """
    half = denom // 2
    nmax = 255 * denom + half
    shift = (nmax * (denom - 1)).bit_length()
    magic = -(-(1 << shift) // denom)
    if shift > 63 or nmax * magic >= 1 << 64:
        return None
    return half, magic, shift


def _gray_magic16(denom):
    """(pre, magic, post) with mulhi16(n >> pre, magic) >> post == n // denom for every n in
    [0, 255 * denom + denom // 2] (checked exhaustively), or None: the dense gray pass keeps the
    whole sum in a 16-bit lane."""
    nmax = 255 * denom + denom // 2
    if nmax > 65535:
        return None
    n = np.arange(nmax + 1, dtype=np.int64)
    want = n // denom
    pre = 0
    while denom % (1 << pre) == 0 and pre < 16:
        for post in range(16):
            magic = -(-(1 << (16 + post)) // (denom >> pre))
            if magic > 65535:
                break
            if np.array_equal(((n >> pre) * magic) >> (16 + post), want):
                return pre, magic, post
        pre += 1
    return None


def _gray_dense(first, weights, in_width):
    """Tables for the dense gray pass (see GrayTables): weights (taps, 32 * chunks) uint16, the
    column where each output's area starts, the AVX2 compaction shuffles (chunks, 32) uint8 and
    output counts (chunks, 2). _axis_taps shifts the window of the last outputs left; here every
    output's taps start at its own first column (they may then reach past the last column, with
    weight 0, into V's padding)."""
    out_width, taps = weights.shape
    chunks = -(-in_width // 32)
    dense = np.zeros((taps, 32 * chunks), np.uint16)
    start = np.zeros(out_width, np.int32)
    for x in range(out_width):
        nz = np.flatnonzero(weights[x])
        f = int(first[x]) + int(nz[0])
        start[x] = f
        for t in nz:
            dense[int(first[x]) + t - f, f] = weights[x, t]
    compact = np.full((chunks, 32), 0x80, np.uint8)
    count = np.zeros((chunks, 2), np.int32)
    for c in range(chunks):
        for h in range(2):
            lo = 32 * c + 16 * h
            picked = [int(f) - lo for f in start if lo <= f < lo + 16]
            compact[c, 16 * h:16 * h + len(picked)] = picked
            count[c, h] = len(picked)
    return dense, start, compact, count


cdef class FramePreprocessor:
    """Turns the last two raw ALE frames into one small gray frame, written into a caller's buffer.

    ``FramePreprocessor(in_shape=(210, 160), out_shape=(84, 84))``; call ``p(prev, cur, out)``
    with two uint8 frames of ``in_shape`` (RGB ``(H, W, 3)`` or gray ``(H, W)``, C-contiguous)
    and a C-contiguous uint8 ``out`` of ``out_shape`` (a replay-ring slot, say). Returns ``out``.
    Nothing is allocated per call and the GIL is released while it runs.

    The palette-index path does the same from ALE's palette indices (``ale.getScreen``, one byte
    a pixel, about 25x cheaper to read than ``getScreenRGB``). The kernel owns two index frames,
    ``index_frames`` (2, H, W) uint8, read-only outside: ``screen(slot, source)`` fills one (from
    ``ale.getScreen`` or an array) and says whether every index in it has a learned colour;
    ``learn_palette(slot, rgb)`` learns them from the same screen in RGB; ``indexed(prev, cur,
    out)`` then writes what the RGB call would for those screens (see there). The palette is
    learned, not built in, because ALE maps indices to colours per TV system (NTSC, PAL, SECAM)
    of the ROM.
    """

    cdef readonly int in_height, in_width, out_height, out_width
    cdef int taps_y, taps_x, denom
    cdef int32_t* first_y
    cdef uint16_t* weight_y
    cdef int32_t* first_x
    cdef float* coef_x
    cdef uint16_t* row_acc     # V: vertical sums of one output row, interleaved (3 * in_width)
    cdef float* row_gray       # S: luminance of V, one per source column
    cdef float* row_out        # one output row before rounding (+ 8 floats for grouped stores)
    cdef HorizontalTables ht
    cdef object _group_tables  # numpy arrays behind the grouped tables
    # exact integer gray path (_gray)
    cdef bint gray_exact       # the gray tables exist (else gray frames take _run's float path)
    cdef int32_t* gray_first_y  # first source row with a nonzero weight, per output row
    cdef int32_t* gray_count_y  # how many (consecutive) rows have one
    cdef uint16_t* gray_weight_y  # those weights, taps_y per output row
    cdef uint16_t* weight_x    # integer horizontal weights, taps_x per output
    cdef uint8_t* gray_tail    # the last output row of the AVX2 pass (it spills past the row)
    cdef uint16_t* gray_scratch  # the dense pass's quotients, one per source column
    cdef uint16_t* gray_v      # two V rows (software pipeline), gray_v_stride words apart
    cdef int gray_v_stride
    cdef GrayTables gt
    cdef object _gray_arrays   # numpy arrays behind gt's dense tables
    # palette-index path
    cdef uint8_t* pair         # [a * 256 + b]: gray of max(colour a, colour b) per channel
    cdef uint8_t* gray_frame   # the pair-gray frame of the two index frames (H * W)
    cdef uint8_t* index_data   # index_frames' bytes
    cdef uint8_t palette_rgb[768]
    cdef uint8_t unknown[256]  # 1 until the index's colour is learned
    cdef uint8_t bitmaps[96]   # the same as bits, for the AVX2 check (see palette_misses)
    cdef uint8_t even_gray[256]  # gray of index 2i, laid out for the build's lookup (even_gray_store)
    cdef bint odd              # an odd index was learned: the AVX2 lookup does not cover it
    cdef bint covered[2]       # index frame i was checked (or learned) since it was filled
    cdef object _writable      # index_frames, writable, for the sources screen() calls
    cdef tuple _slots          # its two frames, as views made once
    cdef readonly int colours
    """How many palette indices have a learned colour."""
    cdef readonly object index_frames
    """(2, H, W) uint8: the two palette-index frames `indexed` reads (write with ale.getScreen)."""

    def __cinit__(self):
        self.first_y = NULL
        self.weight_y = NULL
        self.first_x = NULL
        self.coef_x = NULL
        self.row_acc = NULL
        self.row_gray = NULL
        self.row_out = NULL
        self.pair = NULL
        self.gray_frame = NULL
        self.gray_first_y = NULL
        self.gray_count_y = NULL
        self.gray_weight_y = NULL
        self.weight_x = NULL
        self.gray_tail = NULL
        self.gray_scratch = NULL
        self.gray_v = NULL

    def __init__(self, in_shape=(210, 160), out_shape=(84, 84)):
        cdef int i, t
        ih, iw = _shape2(in_shape, "in_shape")
        oh, ow = _shape2(out_shape, "out_shape")
        if oh > ih or ow > iw:
            raise ValueError(
                f"out_shape {(oh, ow)} must not be larger than in_shape {(ih, iw)}: "
                "area resizing only shrinks"
            )
        fy, wy, dy = _axis_taps(ih, oh)
        fx, wx, dx = _axis_taps(iw, ow)
        # 255 * (sum of vertical weights) must fit the uint16 row accumulator.
        if 255 * dy > 65535:
            raise ValueError(
                f"in_shape height {ih} -> out_shape height {oh} needs a vertical weight sum of {dy}; "
                "at most 257 is accepted (pick heights with a larger common divisor)"
            )
        self.in_height, self.in_width, self.out_height, self.out_width = ih, iw, oh, ow
        self.taps_y, self.taps_x, self.denom = wy.shape[1], wx.shape[1], dx * dy
        self.first_y = <int32_t*> malloc(oh * sizeof(int32_t))
        self.weight_y = <uint16_t*> malloc(oh * self.taps_y * sizeof(uint16_t))
        self.first_x = <int32_t*> malloc(ow * sizeof(int32_t))
        self.coef_x = <float*> malloc(ow * self.taps_x * sizeof(float))
        # the gray path's two V rows: its passes read up to 32 + 15 words past the last column,
        # zeros there (never written)
        self.gray_v_stride = 32 * (-(-iw // 32)) + 64
        self.gray_v = <uint16_t*> calloc(2 * self.gray_v_stride, sizeof(uint16_t))
        self.row_acc = <uint16_t*> malloc(3 * iw * sizeof(uint16_t))
        self.row_gray = <float*> calloc(iw + 24, sizeof(float))  # padding: AVX2 window loads
        self.row_out = <float*> malloc((ow + 8) * sizeof(float))  # grouped stores spill past ow
        self.pair = <uint8_t*> malloc(65536)
        self.gray_frame = <uint8_t*> malloc(ih * iw)
        self.gray_first_y = <int32_t*> malloc(oh * sizeof(int32_t))
        self.gray_count_y = <int32_t*> malloc(oh * sizeof(int32_t))
        self.gray_weight_y = <uint16_t*> calloc(oh * self.taps_y, sizeof(uint16_t))
        self.weight_x = <uint16_t*> malloc(ow * self.taps_x * sizeof(uint16_t))
        self.gray_tail = <uint8_t*> malloc(ow + 32)
        self.gray_scratch = <uint16_t*> malloc((iw + 16) * sizeof(uint16_t))
        if (self.first_y == NULL or self.weight_y == NULL or self.first_x == NULL
                or self.coef_x == NULL or self.row_acc == NULL or self.row_gray == NULL
                or self.row_out == NULL or self.pair == NULL or self.gray_frame == NULL
                or self.gray_first_y == NULL or self.gray_count_y == NULL
                or self.gray_weight_y == NULL or self.weight_x == NULL or self.gray_tail == NULL
                or self.gray_scratch == NULL or self.gray_v == NULL):
            raise MemoryError("FramePreprocessor tables")
        scale = 1.0 / (dx * dy * GRAY_ONE)
        for i in range(oh):
            self.first_y[i] = fy[i]
            for t in range(self.taps_y):
                self.weight_y[i * self.taps_y + t] = wy[i, t]
        for i in range(ow):
            self.first_x[i] = fx[i]
            for t in range(self.taps_x):
                self.coef_x[i * self.taps_x + t] = wx[i, t] * scale
        for i in range(oh):  # the nonzero vertical weights of a row are consecutive
            nz = np.flatnonzero(wy[i])
            self.gray_first_y[i] = fy[i] + nz[0]
            self.gray_count_y[i] = len(nz)
            for t in range(len(nz)):
                self.gray_weight_y[i * self.taps_y + t] = wy[i, nz[t]]
        for i in range(ow):
            for t in range(self.taps_x):
                self.weight_x[i * self.taps_x + t] = wx[i, t]
        self._init_gray(fx, wx, dx * dy)
        self._group_tables = _group_tables(fx, wx * scale, iw)
        base, index, mask, coef, lanes, vecs = self._group_tables
        self.ht.out_width = ow
        self.ht.taps = self.taps_x
        self.ht.first = self.first_x
        self.ht.coef = self.coef_x
        self.ht.groups = base.shape[0]
        self.ht.vecs = vecs
        self.ht.lanes = lanes
        self.ht.group_base = <const int32_t*> _address(base)
        self.ht.group_index = <const int32_t*> _address(index)
        self.ht.group_mask = <const uint32_t*> _address(mask)
        self.ht.group_coef = <const float*> _address(coef)
        self._writable = np.zeros((2, ih, iw), np.uint8)
        self.index_data = <uint8_t*> <size_t> _address(self._writable)
        self._slots = (self._writable[0], self._writable[1])
        self.index_frames = self._writable.view()
        self.index_frames.flags.writeable = False
        self.forget_palette()

    cdef _init_gray(self, fx, wx, denom):
        magic = _gray_magic(denom)
        self.gray_exact = magic is not None
        if not self.gray_exact:
            return
        self.gt.out_width = self.out_width
        self.gt.taps = self.taps_x
        self.gt.first = self.first_x
        self.gt.weight = self.weight_x
        self.gt.half, self.gt.magic, self.gt.shift = magic
        self.gt.dense = NULL
        self.gt.chunks = 0
        magic16 = _gray_magic16(denom)
        if magic16 is None or self.taps_x > 16:  # V's padding: 16 words
            return
        self.gt.half16 = denom // 2
        self.gt.pre, self.gt.magic16, self.gt.post = magic16
        dense, start, compact, count = _gray_dense(fx, wx, self.in_width)
        self.gt.in_width = self.in_width
        self.gt.dense_stride = dense.shape[1]
        self.gt.dense = <const uint16_t*> _address(dense)
        self.gt.dense_first = <const int32_t*> _address(start)
        self.gt.scratch = self.gray_scratch
        # a row's 16-byte stores spill up to 16 bytes past it: the next row must cover them
        self.gt.chunks = compact.shape[0] if self.out_width >= 16 else 0
        self.gt.dense_compact = <const uint8_t*> _address(compact)
        self.gt.dense_count = <const int32_t*> _address(count)
        self._gray_arrays = (dense, start, compact, count)

    def forget_palette(self):
        """Unlearn every colour (the palette-index path then needs `learn_palette` again)."""
        cdef int i, h
        memset(self.pair, 0, 65536)
        memset(self.even_gray, 0, 256)
        self.odd = False
        self.covered[0] = self.covered[1] = False
        memset(self.palette_rgb, 0, 768)
        memset(self.unknown, 1, 256)
        memset(self.bitmaps, 0, 96)
        for i in range(32):
            self.bitmaps[64 + i] = 1 << ((i % 16) & 7)
        self.colours = 0

    @property
    def palette(self):
        """(colours (256, 3) uint8, known (256,) bool): the learned RGB colour of each index."""
        rgb = np.frombuffer(bytes(self.palette_rgb[:768]), np.uint8).reshape(256, 3).copy()
        known = np.frombuffer(bytes(self.unknown[:256]), np.uint8) == 0
        return rgb, known

    cdef int _slot(self, slot, str name) except -1:
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 0 <= slot <= 1:
            raise ValueError(f"{name} must be an index frame slot, 0 or 1, got {slot!r}")
        return slot

    def screen(self, slot, source):
        """Fill ``index_frames[slot]`` and return True when every index in it has a colour.

        ``source``: a callable that fills the frame it is given (``ale.getScreen``), or an
        (H, W) uint8 array of palette indices to copy. On False, call ``learn_palette(slot,
        rgb)`` with the same screen in RGB before ``indexed`` reads this slot.
        """
        cdef int s = self._slot(slot, "slot")
        if callable(source):
            return self._fill(s, source) == 1
        self.covered[s] = False
        self._writable[s] = _frame2(source, "source", self.in_height, self.in_width)
        return self._check(s) == 1

    cdef int _fill(self, int s, source) except -1:
        # screen(s, source) for a callable source: 1 when every index has a colour, else 0
        self.covered[s] = False
        source(self._slots[s])
        return self._check(s)

    cdef int _check(self, int s) noexcept:
        cdef Py_ssize_t n = self.in_height * self.in_width
        cdef int misses
        with nogil:
            misses = palette_misses(self.index_data + s * n, n, self.unknown, self.bitmaps)
        self.covered[s] = misses == 0
        return misses == 0

    def learn_palette(self, slot, rgb):
        """Learn the colours of ``index_frames[slot]`` from the same screen in RGB (H, W, 3).

        Returns how many indices were new. Raises ValueError, learning nothing, if the two
        frames disagree: an index already learned with another colour, or one index with two
        colours (then they are not the same screen).
        """
        cdef int s = self._slot(slot, "slot")
        cdef const uint8_t[:, :, ::1] view = _frame3(rgb, "rgb", self.in_height, self.in_width)
        cdef Py_ssize_t n = self.in_height * self.in_width, i
        cdef const uint8_t* p = self.index_data + s * n
        cdef const uint8_t* c = &view[0, 0, 0]
        cdef uint8_t seen[256]
        cdef uint8_t colour[768]
        cdef const uint8_t* ref
        cdef int k, a, b, ch, conflict = -1, added = 0
        memset(seen, 0, 256)
        with nogil:
            for i in range(n):
                k = p[i]
                if self.unknown[k] == 0 or seen[k]:
                    ref = &self.palette_rgb[0] if self.unknown[k] == 0 else &colour[0]
                    if ref[3 * k] != c[3 * i] or ref[3 * k + 1] != c[3 * i + 1] \
                            or ref[3 * k + 2] != c[3 * i + 2]:
                        conflict = k
                        break
                else:
                    seen[k] = 1
                    colour[3 * k] = c[3 * i]
                    colour[3 * k + 1] = c[3 * i + 1]
                    colour[3 * k + 2] = c[3 * i + 2]
        if conflict >= 0:
            raise ValueError(
                f"palette index {conflict} has two colours in these frames (the index frame and "
                "the RGB frame must be the same screen, read with ale.getScreen and "
                "ale.getScreenRGB)"
            )
        for k in range(256):
            if seen[k]:
                for ch in range(3):
                    self.palette_rgb[3 * k + ch] = colour[3 * k + ch]
                self.unknown[k] = 0
                if k & 1:
                    self.odd = True
                self.bitmaps[(k >> 7) * 32 + (k & 15)] |= 1 << ((k >> 4) & 7)
                self.bitmaps[(k >> 7) * 32 + 16 + (k & 15)] |= 1 << ((k >> 4) & 7)
                added += 1
        self.covered[s] = True  # every index of this frame now has its colour
        if added:
            for a in range(256):
                if not self.unknown[a]:
                    for b in range(256):
                        if not self.unknown[b] and (seen[a] or seen[b]):
                            self.pair[a * 256 + b] = _pair_gray(self.palette_rgb, a, b)
                    if a % 2 == 0:  # (laid out for the build's lookup)
                        even_gray_store(self.even_gray, a, self.pair[a * 257])
            self.colours += added
        return added

    def indexed(self, prev, cur, out=None, stack=None):
        """Write preprocess(max(colours of index_frames[prev], of index_frames[cur])) into ``out``.

        Per pixel, the gray of the per-channel max of the two colours is rounded to a byte (as
        OpenCV's cvtColor does) before the area resize; the RGB call keeps it exact. The two
        agree within 1 and both are within 1 of OpenCV's pipeline.

        ``stack``: an optional (k, H', W') uint8 frame stack (oldest first), shifted by one frame
        (its oldest dropped) with the new frame written last; ``out`` may then be omitted, or be
        a separate buffer (a replay slot) that gets the frame too. Returns ``out``.
        Raises ValueError if a frame holds an index with no learned colour (``screen`` said
        False and ``learn_palette`` was not called), before writing anything.
        """
        cdef int a = self._slot(prev, "prev"), b = self._slot(cur, "cur")
        cdef Py_ssize_t hw = self.out_height * self.out_width
        cdef uint8_t[:, ::1] o
        cdef uint8_t[:, :, ::1] st
        cdef uint8_t* dst = NULL
        cdef uint8_t* last = NULL
        cdef Py_ssize_t k = 0
        if not (self.covered[a] and self.covered[b]):
            raise ValueError(
                f"index frame {a if not self.covered[a] else b} holds a palette index with no "
                "learned colour: call learn_palette() for it (screen() said False)")
        if out is None and stack is None:
            raise ValueError("indexed() needs out, stack or both to write the frame into")
        if out is not None:
            o = _out_view(out, self.out_height, self.out_width)
            dst = &o[0, 0]
        if stack is not None:
            st = _stack_view(stack, self.out_height, self.out_width)
            k = st.shape[0]
            last = &st[k - 1, 0, 0]
            if dst != NULL and dst != last and &st[0, 0, 0] <= dst < last + hw:
                raise ValueError("out must not be one of the stack's frames other than its last")
        with nogil:
            self._indexed(a, b, dst, &st[0, 0, 0] if k else NULL, k)
        return out

    cdef int _indexed(self, int a, int b, uint8_t* dst, uint8_t* stack, Py_ssize_t k) noexcept nogil:
        # indexed() once its arguments are checked: `stack` (k frames, may be NULL) is shifted
        # and gets the frame last; `dst` (may be NULL with a stack, or be its last frame) too.
        # Index frame a must be covered; b may be unchecked when a != b: its check is folded
        # into the pair-gray pass, and on an unknown index nothing is written and 1 returned.
        cdef Py_ssize_t n = self.in_height * self.in_width
        cdef Py_ssize_t hw = self.out_height * self.out_width
        cdef uint8_t* last = stack + (k - 1) * hw if k else NULL
        if pair_gray(self.index_data + a * n, self.index_data + b * n, self.gray_frame, n,
                     self.pair, self.even_gray, self.unknown, self.odd):
            return 1
        self.covered[b] = True
        if k > 1:
            memmove(stack, stack + hw, (k - 1) * hw)
        if dst == NULL:
            dst = last
        if self.gray_exact:
            self._gray(self.gray_frame, dst)
        else:
            self._run(self.gray_frame, self.gray_frame, 1, dst)
        if last != NULL and last != dst:
            memcpy(last, dst, hw)
        return 0

    def __dealloc__(self):
        free(self.first_y)
        free(self.weight_y)
        free(self.first_x)
        free(self.coef_x)
        free(self.row_acc)
        free(self.row_gray)
        free(self.row_out)
        free(self.pair)
        free(self.gray_frame)
        free(self.gray_first_y)
        free(self.gray_count_y)
        free(self.gray_weight_y)
        free(self.weight_x)
        free(self.gray_tail)
        free(self.gray_scratch)
        free(self.gray_v)

    @property
    def in_shape(self):
        return (self.in_height, self.in_width)

    @property
    def out_shape(self):
        return (self.out_height, self.out_width)

    def __repr__(self):
        return f"FramePreprocessor(in_shape={self.in_shape}, out_shape={self.out_shape})"

    def __call__(self, prev, cur, out):
        """Write preprocess(max(prev, cur)) into ``out`` and return ``out``."""
        cdef const uint8_t[:, :, ::1] a3
        cdef const uint8_t[:, :, ::1] b3
        cdef const uint8_t[:, ::1] a2
        cdef const uint8_t[:, ::1] b2
        cdef uint8_t[:, ::1] o
        cdef int channels
        o = _out_view(out, self.out_height, self.out_width)
        ndim = getattr(prev, "ndim", None)
        if ndim == 3:
            a3 = _frame3(prev, "prev", self.in_height, self.in_width)
            b3 = _frame3(cur, "cur", self.in_height, self.in_width)
            with nogil:
                self._run(&a3[0, 0, 0], &b3[0, 0, 0], 3, &o[0, 0])
        elif ndim == 2:
            a2 = _frame2(prev, "prev", self.in_height, self.in_width)
            b2 = _frame2(cur, "cur", self.in_height, self.in_width)
            with nogil:
                if not self.gray_exact:
                    self._run(&a2[0, 0], &b2[0, 0], 1, &o[0, 0])
                elif &a2[0, 0] == &b2[0, 0]:  # one frame: its max with itself is itself
                    self._gray(&a2[0, 0], &o[0, 0])
                else:
                    frame_max(&a2[0, 0], &b2[0, 0], self.gray_frame,
                              self.in_height * self.in_width)
                    self._gray(self.gray_frame, &o[0, 0])
        else:
            raise ValueError(
                f"prev must be a uint8 frame of shape {(self.in_height, self.in_width, 3)} (RGB) "
                f"or {(self.in_height, self.in_width)} (gray), got {_describe(prev)}"
            )
        return out

    cdef void _run(self, const uint8_t* A, const uint8_t* B, int channels, uint8_t* O) noexcept nogil:
        # Everything the loops read is copied into locals first: O is a uint8 pointer, and a
        # store through it may alias any field of self, which would stop gcc hoisting them.
        cdef int n = channels * self.in_width
        cdef int W = self.in_width, h = self.out_height, w = self.out_width
        cdef int ty = self.taps_y
        cdef uint16_t* V = self.row_acc
        cdef float* S = self.row_gray
        cdef const int32_t* first_y = self.first_y
        cdef const uint16_t* weight_y = self.weight_y
        cdef float kr = K_R, kg = K_G, kb = K_B, one = GRAY_ONE
        cdef const uint16_t* v
        cdef const uint8_t* pa
        cdef const uint8_t* pb
        cdef uint16_t wgt
        cdef uint8_t va, vb
        cdef float* F = self.row_out
        cdef int oy, k, j, x
        for oy in range(h):
            # 1. vertical: first tap assigns, the rest accumulate
            pa = A + <Py_ssize_t> first_y[oy] * n
            pb = B + <Py_ssize_t> first_y[oy] * n
            wgt = weight_y[oy * ty]
            for j in range(n):
                va = pa[j]
                vb = pb[j]
                V[j] = wgt * (va if va > vb else vb)
            for k in range(1, ty):
                wgt = weight_y[oy * ty + k]
                pa = pa + n
                pb = pb + n
                if wgt == 0:
                    continue
                for j in range(n):
                    va = pa[j]
                    vb = pb[j]
                    V[j] = V[j] + wgt * (va if va > vb else vb)
            # 2. luminance on the vertically reduced row
            if channels == 3:
                v = V  # pointer walk: with CPython's -fwrapv, gcc will not vectorise V[3 * x]
                for x in range(W):
                    S[x] = kr * v[0] + kg * v[1] + kb * v[2]
                    v = v + 3
            else:
                for x in range(W):
                    S[x] = one * V[x]
            # 3. horizontal (build-specific), then one rounding pass over the row
            horizontal_row(S, F, &self.ht)
            for x in range(w):
                O[x] = <uint8_t> F[x]
            O = O + w



    cdef void _gray(self, const uint8_t* G, uint8_t* O) noexcept nogil:
        # The exact integer area resize of one gray frame G (in_shape) into O (out_shape), row
        # by row: gray_vertical, then gray_row (build-specific) for the horizontal sums and the
        # rounding. Software-pipelined by one row (two V buffers): the horizontal pass reads V
        # with unaligned loads, which stall when they hit the vertical pass's fresh stores. The
        # AVX2 passes write up to 16 bytes past a row: the next row overwrites them, and the
        # last row goes through gray_tail.
        cdef int W = self.in_width, h = self.out_height, w = self.out_width, ty = self.taps_y
        cdef uint16_t* V = self.gray_v
        cdef uint16_t* Vnext = self.gray_v + self.gray_v_stride
        cdef uint16_t* swap
        cdef const int32_t* fy = self.gray_first_y
        cdef const int32_t* ny = self.gray_count_y
        cdef const uint16_t* wy = self.gray_weight_y
        cdef const GrayTables* gt = &self.gt
        cdef uint8_t* tail = self.gray_tail
        cdef bint spill = self.gt.chunks > 0
        cdef int oy
        gray_vertical(G + <Py_ssize_t> fy[0] * W, W, ny[0], wy, V)
        for oy in range(h):
            if oy + 1 < h:
                gray_vertical(G + <Py_ssize_t> fy[oy + 1] * W, W, ny[oy + 1], wy + (oy + 1) * ty,
                              Vnext)
            if spill and oy == h - 1:
                gray_row(V, tail, gt)
                memcpy(O, tail, w)
            else:
                gray_row(V, O, gt)
            O = O + w
            swap = V
            V = Vnext
            Vnext = swap


cdef inline void gray_vertical(const uint8_t* p0, int W, int c, const uint16_t* wy,
                               uint16_t* V) noexcept nogil:
    """V[j] = sum_k wy[k] * p0[k * W + j] over c rows (uint16, exact; fused loops for 2, 3)."""
    cdef const uint8_t* p1 = p0 + W
    cdef const uint8_t* p2 = p1 + W
    cdef uint16_t w0 = wy[0], w1, w2
    cdef int j, k
    if c == 3:
        w1 = wy[1]
        w2 = wy[2]
        for j in range(W):
            V[j] = w0 * p0[j] + w1 * p1[j] + w2 * p2[j]
    elif c == 2:
        w1 = wy[1]
        for j in range(W):
            V[j] = w0 * p0[j] + w1 * p1[j]
    else:
        for j in range(W):
            V[j] = w0 * p0[j]
        for k in range(1, c):
            w1 = wy[k]
            p1 = p0 + <Py_ssize_t> k * W
            for j in range(W):
                V[j] = V[j] + w1 * p1[j]


cdef inline void frame_max(const uint8_t* a, const uint8_t* b, uint8_t* m, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint8_t va, vb
    for i in range(n):
        va = a[i]
        vb = b[i]
        m[i] = va if va > vb else vb


cdef inline uint8_t _pair_gray(const uint8_t* rgb, int a, int b) noexcept nogil:
    """OpenCV's RGB2GRAY (fixed point, rounded) of the per-channel max of palette colours a, b."""
    cdef int32_t r = rgb[3 * a] if rgb[3 * a] > rgb[3 * b] else rgb[3 * b]
    cdef int32_t g = rgb[3 * a + 1] if rgb[3 * a + 1] > rgb[3 * b + 1] else rgb[3 * b + 1]
    cdef int32_t bl = rgb[3 * a + 2] if rgb[3 * a + 2] > rgb[3 * b + 2] else rgb[3 * b + 2]
    return <uint8_t> ((4899 * r + 9617 * g + 1868 * bl + 8192) >> 14)


cdef str _describe(obj):
    if isinstance(obj, np.ndarray):
        layout = "C-contiguous" if obj.flags.c_contiguous else "not C-contiguous"
        return f"{obj.dtype} array of shape {obj.shape} ({layout})"
    return repr(type(obj).__name__)


cdef _check_array(obj, str name, tuple shape):
    if (not isinstance(obj, np.ndarray) or obj.dtype != np.uint8 or obj.shape != shape
            or not obj.flags.c_contiguous):
        raise ValueError(
            f"{name} must be a C-contiguous uint8 array of shape {shape}, got {_describe(obj)}"
        )


cdef const uint8_t[:, :, ::1] _frame3(obj, str name, int h, int w):
    cdef const uint8_t[:, :, ::1] view
    try:
        view = obj
    except (TypeError, ValueError, BufferError):
        view = None
    if view is None or view.shape[0] != h or view.shape[1] != w or view.shape[2] != 3:
        _check_array(obj, name, (h, w, 3))
        raise ValueError(f"{name} must be a C-contiguous uint8 array of shape {(h, w, 3)}")
    return view


cdef const uint8_t[:, ::1] _frame2(obj, str name, int h, int w):
    cdef const uint8_t[:, ::1] view
    try:
        view = obj
    except (TypeError, ValueError, BufferError):
        view = None
    if view is None or view.shape[0] != h or view.shape[1] != w:
        _check_array(obj, name, (h, w))
        raise ValueError(f"{name} must be a C-contiguous uint8 array of shape {(h, w)}")
    return view


cdef uint8_t[:, :, ::1] _stack_view(obj, int h, int w):
    cdef uint8_t[:, :, ::1] view
    try:
        view = obj
    except (TypeError, ValueError, BufferError):
        view = None
    if view is None or view.shape[0] < 1 or view.shape[1] != h or view.shape[2] != w:
        raise ValueError(f"stack must be a writable C-contiguous uint8 array of shape "
                         f"(frames, {h}, {w}), got {_describe(obj)}")
    return view


cdef uint8_t[:, ::1] _out_view(obj, int h, int w):
    cdef uint8_t[:, ::1] view
    try:
        view = obj
    except (TypeError, ValueError, BufferError):
        view = None
    if view is None or view.shape[0] != h or view.shape[1] != w:
        _check_array(obj, "out", (h, w))
        raise ValueError(f"out must be a writable C-contiguous uint8 array of shape {(h, w)}")
    return view


from cpu cimport atari_agent_cpu_has_avx2_fma, atari_agent_cpu_has_avx512_vbmi


def cpu_has_avx2_fma():
    """True when this CPU can run the AVX2 + FMA build of the kernel."""
    return bool(atari_agent_cpu_has_avx2_fma())


def cpu_has_avx512_vbmi():
    """True when this CPU (and OS) can run the AVX-512 build: F, BW and VBMI, with AVX2 + FMA."""
    return bool(atari_agent_cpu_has_avx512_vbmi())


def _group_tables(first, coef, int in_width):
    """Tables for the grouped horizontal pass (see HorizontalTables).

    Picks the most outputs per group (8 down to 4) whose source window fits two vectors (16
    floats: two permutes per tap); failing that, 8 outputs over three vectors; failing that,
    vecs = 0 (the AVX2 build then uses the sparse form).
    """
    out_width, taps = coef.shape
    choice = None
    for lanes in range(8, 3, -1):
        tables = _group_tables_for(first, coef, lanes)
        if tables[5] <= 2:
            choice = tables
            break
    if choice is None:
        choice = _group_tables_for(first, coef, 8)
    base, index, mask, gcoef, lanes, vecs = choice
    return base, index, mask, gcoef, lanes, (vecs if vecs <= 3 else 0)


def _group_tables_for(first, coef, int lanes):
    out_width, taps = coef.shape
    groups = (out_width + lanes - 1) // lanes
    base = np.zeros(groups, np.int32)
    index = np.zeros((groups, taps, 8), np.int32)
    mask = np.zeros((groups, taps, 2, 8), np.uint32)
    gcoef = np.zeros((groups, taps, 8), np.float32)
    widest = 0
    for g in range(groups):
        outputs = range(lanes * g, min(lanes * g + lanes, out_width))
        base[g] = first[outputs[0]]
        for lane, o in enumerate(outputs):
            for t in range(taps):
                pos = int(first[o]) + t - int(base[g])
                widest = max(widest, pos + 1)
                index[g, t, lane] = pos
                mask[g, t, 0, lane] = 0xFFFFFFFF if pos >= 8 else 0
                mask[g, t, 1, lane] = 0xFFFFFFFF if pos >= 16 else 0
                gcoef[g, t, lane] = coef[o, t]
    return base, index, mask, gcoef, lanes, (widest + 7) // 8


cdef size_t _address(arr):
    return <size_t> arr.ctypes.data


include "frames_skip.pxi"
