# The few AVX-512 intrinsics the AVX-512 build of the frame kernel uses (header-only declarations):
# byte permutes over two registers (VBMI) for the palette-index lookups, and byte masks (BW).
# Only frames_avx512.pyx cimports this, and only that module is compiled with -mavx512*.

cdef extern from "immintrin.h" nogil:
    ctypedef struct __m512i:
        pass
    ctypedef unsigned long long __mmask64
    __m512i _mm512_loadu_si512(const void* p)
    void _mm512_storeu_si512(void* p, __m512i a)
    __m512i _mm512_set1_epi8(char a)
    __m512i _mm512_setzero_si512()
    __m512i _mm512_and_si512(__m512i a, __m512i b)
    __m512i _mm512_or_si512(__m512i a, __m512i b)
    __m512i _mm512_srli_epi16(__m512i a, unsigned int imm)
    __m512i _mm512_permutex2var_epi8(__m512i a, __m512i idx, __m512i b)
    __m512i _mm512_mask_blend_epi8(__mmask64 k, __m512i a, __m512i b)
    __mmask64 _mm512_movepi8_mask(__m512i a)
    __mmask64 _mm512_cmpeq_epi8_mask(__m512i a, __m512i b)
    __mmask64 _mm512_test_epi8_mask(__m512i a, __m512i b)
