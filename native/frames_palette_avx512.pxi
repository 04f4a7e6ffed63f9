# Palette-index path, AVX-512 build (VBMI), 64 pixels at a time: a 128-entry byte table is one
# two-register byte permute (vpermi2b), so the unknown-colour check (256 entries: two permutes
# and a blend on the index's top bit) and the pair-gray lookup of the even indices (one permute)
# cost a few instructions per 64 pixels. Pixels whose two frames differ are looked up one by one
# in the pair table; tails, and frames with an odd index, go through the scalar loops.

from libc.stdint cimport uint8_t, uint64_t

from simd_avx512 cimport (
    __m512i,
    __mmask64,
    _mm512_and_si512,
    _mm512_cmpeq_epi8_mask,
    _mm512_loadu_si512,
    _mm512_mask_blend_epi8,
    _mm512_movepi8_mask,
    _mm512_or_si512,
    _mm512_permutex2var_epi8,
    _mm512_set1_epi8,
    _mm512_setzero_si512,
    _mm512_srli_epi16,
    _mm512_storeu_si512,
    _mm512_test_epi8_mask,
)


cdef extern from *:
    int __builtin_ctzll(unsigned long long x) nogil


cdef inline void even_gray_store(uint8_t* even_gray, int index, uint8_t gray) noexcept nogil:
    # this build's even_gray: entry index / 2 of one 128-byte table
    even_gray[index >> 1] = gray


cdef inline int palette_misses(const uint8_t* p, Py_ssize_t n, const uint8_t* unknown,
                               const uint8_t* bitmaps) noexcept nogil:
    # unknown: 256 bytes, nonzero for an index with no colour; looked up 64 indices at a time.
    cdef __m512i u0 = _mm512_loadu_si512(unknown)
    cdef __m512i u1 = _mm512_loadu_si512(unknown + 64)
    cdef __m512i u2 = _mm512_loadu_si512(unknown + 128)
    cdef __m512i u3 = _mm512_loadu_si512(unknown + 192)
    cdef __m512i bad = _mm512_setzero_si512()
    cdef __m512i v
    cdef Py_ssize_t i = 0
    while i + 64 <= n:
        v = _mm512_loadu_si512(p + i)
        bad = _mm512_or_si512(bad, _mm512_mask_blend_epi8(
            _mm512_movepi8_mask(v),                       # the top bit picks the upper half
            _mm512_permutex2var_epi8(u0, v, u1), _mm512_permutex2var_epi8(u2, v, u3)))
        i += 64
    if _mm512_test_epi8_mask(bad, bad) != 0:
        return 1
    return palette_misses_scalar(p + i, n - i, unknown)


cdef inline int pair_gray(const uint8_t* a, const uint8_t* b, uint8_t* g, Py_ssize_t n,
                          const uint8_t* pair, const uint8_t* even_gray, const uint8_t* unknown,
                          bint odd) noexcept nogil:
    # even_gray: 128 bytes, the gray of index 2h at h. A pixel whose frames agree (a == b) takes
    # its colour's gray; see pair_gray_scalar for the rest and the return value.
    cdef __m512i t0, t1, seven_bits, va, vb
    cdef uint64_t differ
    cdef uint8_t bad = 0
    cdef int j
    cdef Py_ssize_t i = 0
    if odd:
        return pair_gray_scalar(a, b, g, n, pair, unknown)
    t0 = _mm512_loadu_si512(even_gray)
    t1 = _mm512_loadu_si512(even_gray + 64)
    seven_bits = _mm512_set1_epi8(0x7F)
    while i + 64 <= n:
        va = _mm512_loadu_si512(a + i)
        vb = _mm512_loadu_si512(b + i)
        _mm512_storeu_si512(g + i, _mm512_permutex2var_epi8(
            t0, _mm512_and_si512(_mm512_srli_epi16(va, 1), seven_bits), t1))
        differ = ~(<uint64_t> _mm512_cmpeq_epi8_mask(va, vb))
        while differ:
            j = __builtin_ctzll(differ)
            g[i + j] = pair[(<Py_ssize_t> a[i + j] << 8) | b[i + j]]
            bad = bad | unknown[b[i + j]]
            differ = differ & (differ - 1)
        i += 64
    return pair_gray_scalar(a + i, b + i, g + i, n - i, pair, unknown) | (bad != 0)
