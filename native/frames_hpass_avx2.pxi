# Horizontal passes, AVX2 build. RGB path (float): 8 outputs at a time. The source pixels a
# group of 8 outputs reads lie in a window of at most 24 floats; three unaligned loads bring it
# into registers, and for each tap an in-register permute (vpermps) plus blends picks every
# lane's pixel, so there is no gather.

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t

from simd_avx2 cimport (
    __m128i,
    __m256,
    __m256i,
    _mm256_add_epi16,
    _mm256_add_ps,
    _mm256_blendv_ps,
    _mm256_castsi256_si128,
    _mm256_extracti128_si256,
    _mm256_fmadd_ps,
    _mm256_loadu_ps,
    _mm256_loadu_si256,
    _mm256_mul_ps,
    _mm256_mulhi_epu16,
    _mm256_mullo_epi16,
    _mm256_packus_epi16,
    _mm256_permute4x64_epi64,
    _mm256_permutevar8x32_ps,
    _mm256_set1_epi16,
    _mm256_set1_ps,
    _mm256_shuffle_epi8,
    _mm256_srl_epi16,
    _mm256_storeu_ps,
    _mm_cvtsi32_si128,
    _mm_storeu_si128,
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


# Gray path (exact, 16-bit lanes), the dense form of GrayTables: 16 columns' tap sums from three
# unaligned loads of V (no shuffles), the multiply-high division, then per 32 columns one pack,
# one qword permute and one byte shuffle to gather the outputs, stored 16 bytes at a time.

cdef inline __m256i _dense16(const uint16_t* V, const uint16_t* a, int stride, int taps,
                            __m256i half, __m256i magic, __m128i pre, __m128i post) noexcept nogil:
    """Quotients of 16 consecutive columns: (half + sum_t a[t * stride] * V[t]) // D."""
    cdef __m256i acc
    cdef int t
    if taps == 3:
        acc = _mm256_add_epi16(
            _mm256_add_epi16(half, _mm256_mullo_epi16(
                _mm256_loadu_si256(<const __m256i*> a), _mm256_loadu_si256(<const __m256i*> V))),
            _mm256_add_epi16(
                _mm256_mullo_epi16(_mm256_loadu_si256(<const __m256i*> (a + stride)),
                                   _mm256_loadu_si256(<const __m256i*> (V + 1))),
                _mm256_mullo_epi16(_mm256_loadu_si256(<const __m256i*> (a + 2 * stride)),
                                   _mm256_loadu_si256(<const __m256i*> (V + 2)))))
    else:
        acc = half
        for t in range(taps):
            acc = _mm256_add_epi16(acc, _mm256_mullo_epi16(
                _mm256_loadu_si256(<const __m256i*> (a + t * stride)),
                _mm256_loadu_si256(<const __m256i*> (V + t))))
    return _mm256_srl_epi16(_mm256_mulhi_epu16(_mm256_srl_epi16(acc, pre), magic), post)


cdef inline void gray_row_dense_avx2(const uint16_t* V, uint8_t* O, const GrayTables* gt) noexcept nogil:
    # table fields in locals: the stores through O may alias them
    cdef int c, chunks = gt.chunks, taps = gt.taps, stride = gt.dense_stride
    cdef const uint16_t* a = gt.dense
    cdef const uint8_t* compact = gt.dense_compact
    cdef const int32_t* count = gt.dense_count
    cdef __m256i half = _mm256_set1_epi16(<short> gt.half16)
    cdef __m256i magic = _mm256_set1_epi16(<short> gt.magic16)
    cdef __m128i pre = _mm_cvtsi32_si128(gt.pre)
    cdef __m128i post = _mm_cvtsi32_si128(gt.post)
    cdef __m256i q
    for c in range(chunks):
        q = _mm256_packus_epi16(_dense16(V, a, stride, taps, half, magic, pre, post),
                                _dense16(V + 16, a + 16, stride, taps, half, magic, pre, post))
        # packus interleaves the halves (columns 0-7, 16-23 | 8-15, 24-31): put them in order
        q = _mm256_permute4x64_epi64(q, 0xD8)
        q = _mm256_shuffle_epi8(q, _mm256_loadu_si256(<const __m256i*> compact))
        _mm_storeu_si128(<__m128i*> O, _mm256_castsi256_si128(q))
        O = O + count[0]
        _mm_storeu_si128(<__m128i*> O, _mm256_extracti128_si256(q, 1))
        O = O + count[1]
        V = V + 32
        a = a + 32
        compact = compact + 32
        count = count + 2


cdef inline void gray_row(const uint16_t* V, uint8_t* O, const GrayTables* gt) noexcept nogil:
    if gt.chunks:
        gray_row_dense_avx2(V, O, gt)
        return
    if gt.dense != NULL:
        gray_row_dense(V, O, gt)
    else:
        gray_row_scalar(V, O, gt)
