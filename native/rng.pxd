# xoshiro256** random numbers for the samplers (header-only: inlined into each module that cimports it).
# Own generator rather than numpy's so draws happen without the GIL and the state (four uint64
# words) can be saved and restored with a replay snapshot.

from libc.stdint cimport uint64_t

cdef extern from *:
    """
    static inline uint64_t atari_agent_mulhi64(uint64_t a, uint64_t b) {
    #if defined(__SIZEOF_INT128__)
        return (uint64_t)(((unsigned __int128)a * b) >> 64);
    #else
        uint64_t a_lo = (uint32_t)a, a_hi = a >> 32, b_lo = (uint32_t)b, b_hi = b >> 32;
        uint64_t p0 = a_lo * b_lo, p1 = a_lo * b_hi, p2 = a_hi * b_lo, p3 = a_hi * b_hi;
        uint64_t mid = (p0 >> 32) + (uint32_t)p1 + (uint32_t)p2;
        return p3 + (p1 >> 32) + (p2 >> 32) + (mid >> 32);
    #endif
    }
    """
    uint64_t atari_agent_mulhi64(uint64_t a, uint64_t b) noexcept nogil


cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t splitmix64(uint64_t* x) noexcept nogil:
    x[0] += <uint64_t> 0x9E3779B97F4A7C15
    cdef uint64_t z = x[0]
    z = (z ^ (z >> 30)) * <uint64_t> 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t> 0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline void rng_seed(uint64_t* s, uint64_t seed) noexcept nogil:
    cdef uint64_t x = seed
    cdef int i
    for i in range(4):
        s[i] = splitmix64(&x)


cdef inline uint64_t rng_next(uint64_t* s) noexcept nogil:
    cdef uint64_t result = _rotl(s[1] * 5, 7) * 9
    cdef uint64_t t = s[1] << 17
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


cdef inline uint64_t rng_below(uint64_t* s, uint64_t bound) noexcept nogil:
    """Uniform integer in [0, bound) (Lemire's multiply-shift; bias below 2^-40 for any bound we use)."""
    return atari_agent_mulhi64(rng_next(s), bound)


cdef inline double rng_uniform(uint64_t* s) noexcept nogil:
    """Uniform double in [0, 1) with 53 random bits."""
    return (rng_next(s) >> 11) * (1.0 / 9007199254740992.0)
