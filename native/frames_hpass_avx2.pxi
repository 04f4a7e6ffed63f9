# Horizontal pass, AVX2 build: 8 outputs at a time. The source pixels a group of 8 outputs reads lie
# in a window of at most 24 floats; three unaligned loads bring it into registers, and for each tap
# an in-register permute (vpermps) plus blends picks every lane's pixel, so there is no gather.

from libc.stdint cimport int32_t, uint32_t

from simd_avx2 cimport (
    __m256,
    __m256i,
    _mm256_add_ps,
    _mm256_blendv_ps,
    _mm256_fmadd_ps,
    _mm256_loadu_ps,
    _mm256_loadu_si256,
    _mm256_mul_ps,
    _mm256_permutevar8x32_ps,
    _mm256_set1_ps,
    _mm256_storeu_ps,
)


cdef inline __m256 _pick2(__m256 a0, __m256 a1, const int32_t* index,
                          const uint32_t* mask) noexcept nogil:
    """Lane i gets window[index[i]] from the 16-float window a0|a1 (mask: index >= 8)."""
    cdef __m256i iv = _mm256_loadu_si256(<const __m256i*> index)
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(a0, iv), _mm256_permutevar8x32_ps(a1, iv),
                            _mm256_loadu_ps(<const float*> mask))


cdef inline void horizontal_row(const float* S, float* F, const HorizontalTables* ht) noexcept nogil:
    cdef int g, t, k
    cdef const float* p
    cdef __m256 a0, a1, a2, x, acc, acc2
    cdef __m256i iv
    if ht.vecs == 0:  # a window wider than 24 pixels (shrinking by more than ~2.6x): scalar
        horizontal_row_scalar(S, F, ht)
        return
    if ht.taps == 3 and ht.vecs == 2:  # 160 -> 84 in groups of 7, say: two permutes per tap
        for g in range(ht.groups):
            p = S + ht.group_base[g]
            a0 = _mm256_loadu_ps(p)
            a1 = _mm256_loadu_ps(p + 8)    # S is padded by 24 floats, so this never leaves it
            k = 3 * g
            # independent products summed at the end: short dependency chains
            x = _pick2(a0, a1, ht.group_index + 8 * k, ht.group_mask + 16 * k)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(ht.group_coef + 8 * k), x, _mm256_set1_ps(0.5))
            x = _pick2(a0, a1, ht.group_index + 8 * k + 8, ht.group_mask + 16 * k + 16)
            acc2 = _mm256_mul_ps(_mm256_loadu_ps(ht.group_coef + 8 * k + 8), x)
            x = _pick2(a0, a1, ht.group_index + 8 * k + 16, ht.group_mask + 16 * k + 32)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(ht.group_coef + 8 * k + 16), x, acc)
            # 8 lanes stored, `lanes` of them valid: the next group overwrites the rest
            _mm256_storeu_ps(F + ht.lanes * g, _mm256_add_ps(acc, acc2))
        return
    for g in range(ht.groups):
        p = S + ht.group_base[g]
        a0 = _mm256_loadu_ps(p)
        a1 = _mm256_loadu_ps(p + 8)    # S is padded by 24 floats, so these never leave it
        a2 = _mm256_loadu_ps(p + 16)
        acc = _mm256_set1_ps(0.5)
        for t in range(ht.taps):
            k = g * ht.taps + t
            iv = _mm256_loadu_si256(<const __m256i*> (ht.group_index + 8 * k))
            x = _mm256_permutevar8x32_ps(a0, iv)
            if ht.vecs > 1:
                x = _mm256_blendv_ps(x, _mm256_permutevar8x32_ps(a1, iv),
                                     _mm256_loadu_ps(<const float*> (ht.group_mask + 16 * k)))
            if ht.vecs > 2:
                x = _mm256_blendv_ps(x, _mm256_permutevar8x32_ps(a2, iv),
                                     _mm256_loadu_ps(<const float*> (ht.group_mask + 16 * k + 8)))
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(ht.group_coef + 8 * k), x, acc)
        _mm256_storeu_ps(F + ht.lanes * g, acc)
