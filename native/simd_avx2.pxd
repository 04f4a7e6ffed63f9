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
