# Frame preprocessing kernel: max of two raw ALE frames -> luminance -> area resize, in one pass.
#
# This file is compiled twice (frames.pyx for any CPU, frames_avx2.pyx with -mavx2 -mfma) and
# agent.native picks the AVX2 build at import when the CPU has it. Same source, same results
# within rounding; gcc only vectorises the stride-3 RGB reads when AVX2 is available, and each
# build brings its own horizontal pass (frames_hpass_scalar.pxi / frames_hpass_avx2.pxi).
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

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t
from libc.stdlib cimport calloc, free, malloc

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


cdef class FramePreprocessor:
    """Turns the last two raw ALE frames into one small gray frame, written into a caller's buffer.

    ``FramePreprocessor(in_shape=(210, 160), out_shape=(84, 84))``; call ``p(prev, cur, out)``
    with two uint8 frames of ``in_shape`` (RGB ``(H, W, 3)`` or gray ``(H, W)``, C-contiguous)
    and a C-contiguous uint8 ``out`` of ``out_shape`` (a replay-ring slot, say). Returns ``out``.
    Nothing is allocated per call and the GIL is released while it runs.
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

    def __cinit__(self):
        self.first_y = NULL
        self.weight_y = NULL
        self.first_x = NULL
        self.coef_x = NULL
        self.row_acc = NULL
        self.row_gray = NULL
        self.row_out = NULL

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
        self.row_acc = <uint16_t*> malloc(3 * iw * sizeof(uint16_t))
        self.row_gray = <float*> calloc(iw + 24, sizeof(float))  # padding: AVX2 window loads
        self.row_out = <float*> malloc((ow + 8) * sizeof(float))  # grouped stores spill past ow
        if (self.first_y == NULL or self.weight_y == NULL or self.first_x == NULL
                or self.coef_x == NULL or self.row_acc == NULL or self.row_gray == NULL
                or self.row_out == NULL):
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

    def __dealloc__(self):
        free(self.first_y)
        free(self.weight_y)
        free(self.first_x)
        free(self.coef_x)
        free(self.row_acc)
        free(self.row_gray)
        free(self.row_out)

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
                self._run(&a2[0, 0], &b2[0, 0], 1, &o[0, 0])
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


from cpu cimport atari_agent_cpu_has_avx2_fma


def cpu_has_avx2_fma():
    """True when this CPU can run the AVX2 + FMA build of the kernel."""
    return bool(atari_agent_cpu_has_avx2_fma())


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
