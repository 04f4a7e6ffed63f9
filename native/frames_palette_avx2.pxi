# Palette-index path, AVX2 build, 32 pixels at a time: the unknown-colour check (byte shuffles
# into a 256-bit "known" bitmap) and the pair-gray frame (a 128-entry byte lookup as eight
# 16-entry shuffles, for the even indices the TIA emits; pixels whose two frames differ are
# looked up one by one in the pair table). Tails, and frames with an odd index, go through the
# scalar loops of frames_palette_scalar.pxi. (A vpgatherdd per 8 pixels measured slower than the
# RGB kernel here.)

from libc.stdint cimport uint8_t, uint32_t

from simd_avx2 cimport (
    __m256i,
    _mm256_and_si256,
    _mm256_blendv_epi8,
    _mm256_cmpeq_epi8,
    _mm256_loadu_si256,
    _mm256_movemask_epi8,
    _mm256_or_si256,
    _mm256_set1_epi8,
    _mm256_setzero_si256,
    _mm256_shuffle_epi8,
    _mm256_srli_epi16,
    _mm256_storeu_si256,
)


cdef extern from *:
    int __builtin_ctz(unsigned int x) nogil


cdef inline void even_gray_store(uint8_t* even_gray, int index, uint8_t gray) noexcept nogil:
    # this build's even_gray (see pair_gray): table index // 32, entry (index // 2) % 16, twice
    even_gray[(index >> 5) * 32 + ((index >> 1) & 15)] = gray
    even_gray[(index >> 5) * 32 + 16 + ((index >> 1) & 15)] = gray


cdef inline int palette_misses(const uint8_t* p, Py_ssize_t n, const uint8_t* unknown,
                               const uint8_t* bitmaps) noexcept nogil:
    # bitmaps: 96 bytes, three 32-byte tables (each 16 bytes, twice): byte l of the first has bit
    # h set when index 16h + l is known (h < 8), the second the same for 128 + 16h + l, the
    # third holds 1 << h. A byte's top bit picks the table (blendv reads exactly that bit).
    cdef __m256i low_known = _mm256_loadu_si256(<const __m256i*> bitmaps)
    cdef __m256i high_known = _mm256_loadu_si256(<const __m256i*> (bitmaps + 32))
    cdef __m256i bit_of = _mm256_loadu_si256(<const __m256i*> (bitmaps + 64))
    cdef __m256i nibble = _mm256_set1_epi8(0x0F)
    cdef __m256i zero = _mm256_setzero_si256()
    cdef __m256i bad = zero
    cdef __m256i v, lo, hi, row
    cdef Py_ssize_t i = 0
    while i + 32 <= n:
        v = _mm256_loadu_si256(<const __m256i*> (p + i))
        lo = _mm256_and_si256(v, nibble)
        hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble)
        row = _mm256_blendv_epi8(_mm256_shuffle_epi8(low_known, lo),
                                 _mm256_shuffle_epi8(high_known, lo), v)
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi8(
            _mm256_and_si256(row, _mm256_shuffle_epi8(bit_of, hi)), zero))
        i += 32
    if _mm256_movemask_epi8(bad) != 0:
        return 1
    return palette_misses_scalar(p + i, n - i, unknown)


cdef inline int pair_gray(const uint8_t* a, const uint8_t* b, uint8_t* g, Py_ssize_t n,
                          const uint8_t* pair, const uint8_t* even_gray, const uint8_t* unknown,
                          bint odd) noexcept nogil:
    # even_gray: 256 bytes, eight 32-byte tables (16 bytes, twice): table k, byte l holds the gray
    # of index 2 * (16k + l). A pixel whose frames agree (a == b) takes its colour's gray.
    # Returns 1 if b holds an unknown index where it differs from a (see pair_gray_scalar).
    cdef uint8_t bad = 0
    cdef __m256i t0, t1, t2, t3, t4, t5, t6, t7
    cdef __m256i nibble = _mm256_set1_epi8(0x0F)
    cdef __m256i seven = _mm256_set1_epi8(0x07)
    cdef __m256i va, vb, half, lo, hi, r, k
    cdef uint32_t differ
    cdef int j
    cdef Py_ssize_t i = 0
    if odd:
        return pair_gray_scalar(a, b, g, n, pair, unknown)
    t0 = _mm256_loadu_si256(<const __m256i*> even_gray)
    t1 = _mm256_loadu_si256(<const __m256i*> (even_gray + 32))
    t2 = _mm256_loadu_si256(<const __m256i*> (even_gray + 64))
    t3 = _mm256_loadu_si256(<const __m256i*> (even_gray + 96))
    t4 = _mm256_loadu_si256(<const __m256i*> (even_gray + 128))
    t5 = _mm256_loadu_si256(<const __m256i*> (even_gray + 160))
    t6 = _mm256_loadu_si256(<const __m256i*> (even_gray + 192))
    t7 = _mm256_loadu_si256(<const __m256i*> (even_gray + 224))
    while i + 32 <= n:
        va = _mm256_loadu_si256(<const __m256i*> (a + i))
        vb = _mm256_loadu_si256(<const __m256i*> (b + i))
        half = _mm256_srli_epi16(va, 1)                      # index / 2, 7 bits after the mask
        lo = _mm256_and_si256(half, nibble)
        hi = _mm256_and_si256(_mm256_srli_epi16(half, 4), seven)
        r = _mm256_shuffle_epi8(t0, lo)
        k = _mm256_set1_epi8(1)
        r = _mm256_blendv_epi8(r, _mm256_shuffle_epi8(t1, lo), _mm256_cmpeq_epi8(hi, k))
        k = _mm256_set1_epi8(2)
        r = _mm256_blendv_epi8(r, _mm256_shuffle_epi8(t2, lo), _mm256_cmpeq_epi8(hi, k))
        k = _mm256_set1_epi8(3)
        r = _mm256_blendv_epi8(r, _mm256_shuffle_epi8(t3, lo), _mm256_cmpeq_epi8(hi, k))
        k = _mm256_set1_epi8(4)
        r = _mm256_blendv_epi8(r, _mm256_shuffle_epi8(t4, lo), _mm256_cmpeq_epi8(hi, k))
        k = _mm256_set1_epi8(5)
        r = _mm256_blendv_epi8(r, _mm256_shuffle_epi8(t5, lo), _mm256_cmpeq_epi8(hi, k))
        k = _mm256_set1_epi8(6)
        r = _mm256_blendv_epi8(r, _mm256_shuffle_epi8(t6, lo), _mm256_cmpeq_epi8(hi, k))
        k = _mm256_set1_epi8(7)
        r = _mm256_blendv_epi8(r, _mm256_shuffle_epi8(t7, lo), _mm256_cmpeq_epi8(hi, k))
        _mm256_storeu_si256(<__m256i*> (g + i), r)
        differ = ~(<uint32_t> _mm256_movemask_epi8(_mm256_cmpeq_epi8(va, vb)))
        while differ:
            j = __builtin_ctz(differ)
            g[i + j] = pair[(<Py_ssize_t> a[i + j] << 8) | b[i + j]]
            bad = bad | unknown[b[i + j]]
            differ = differ & (differ - 1)
        i += 32
    return pair_gray_scalar(a + i, b + i, g + i, n - i, pair, unknown) | (bad != 0)
