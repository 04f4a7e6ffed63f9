# The few AVX2/FMA intrinsics the AVX2 build of the frame kernel uses (header-only declarations).
# Only frames_avx2.pyx cimports this, and only that module is compiled with -mavx2 -mfma.

cdef extern from "immintrin.h" nogil:
    ctypedef struct __m256:
        pass
    ctypedef struct __m256i:
        pass
    __m256 _mm256_loadu_ps(const float* p)
    __m256i _mm256_loadu_si256(const __m256i* p)
    void _mm256_storeu_ps(float* p, __m256 a)
    __m256 _mm256_set1_ps(float a)
    __m256 _mm256_permutevar8x32_ps(__m256 a, __m256i idx)
    __m256 _mm256_blendv_ps(__m256 a, __m256 b, __m256 mask)
    __m256 _mm256_fmadd_ps(__m256 a, __m256 b, __m256 c)
    __m256 _mm256_mul_ps(__m256 a, __m256 b)
    __m256 _mm256_add_ps(__m256 a, __m256 b)

    # integer lanes: the palette-index path (frames_palette_avx2.pxi)
    ctypedef struct __m128i:
        pass
    __m128i _mm_loadl_epi64(const __m128i* p)
    __m256i _mm256_cvtepu8_epi32(__m128i a)
    __m256i _mm256_slli_epi32(__m256i a, int imm)
    __m256i _mm256_srli_epi16(__m256i a, int imm)
    __m256i _mm256_or_si256(__m256i a, __m256i b)
    __m256i _mm256_and_si256(__m256i a, __m256i b)
    __m256i _mm256_add_epi32(__m256i a, __m256i b)
    __m256i _mm256_mullo_epi32(__m256i a, __m256i b)
    __m256i _mm256_set1_epi32(int a)
    __m256i _mm256_set1_epi8(char a)
    __m256i _mm256_setzero_si256()
    __m256i _mm256_i32gather_epi32(const int* base, __m256i index, int scale)
    __m256i _mm256_shuffle_epi8(__m256i a, __m256i b)
    __m256i _mm256_blendv_epi8(__m256i a, __m256i b, __m256i mask)
    __m256i _mm256_cmpeq_epi8(__m256i a, __m256i b)
    int _mm256_movemask_epi8(__m256i a)
    void _mm256_storeu_si256(__m256i* p, __m256i a)

    # 16-bit lanes: the exact integer gray resize (frames_hpass_avx2.pxi)
    __m128i _mm_cvtsi32_si128(int a)
    __m128i _mm256_castsi256_si128(__m256i a)
    __m128i _mm256_extracti128_si256(__m256i a, const int imm)
    __m256i _mm256_set1_epi16(short a)
    __m256i _mm256_add_epi16(__m256i a, __m256i b)
    __m256i _mm256_mullo_epi16(__m256i a, __m256i b)
    __m256i _mm256_mulhi_epu16(__m256i a, __m256i b)
    __m256i _mm256_srl_epi16(__m256i a, __m128i count)
    __m256i _mm256_packus_epi16(__m256i a, __m256i b)
    __m256i _mm256_permute4x64_epi64(__m256i a, const int imm)
    void _mm_storeu_si128(__m128i* p, __m128i a)
