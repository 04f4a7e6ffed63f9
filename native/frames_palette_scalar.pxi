# Palette-index path, the scalar loops (both builds; the AVX2 one uses them for tails and for
# the odd palette indices no ALE ROM has shown): the unknown-colour check and the pair-gray frame.


cdef inline int palette_misses_scalar(const uint8_t* p, Py_ssize_t n,
                                      const uint8_t* unknown) noexcept nogil:
    """1 if any of the n palette indices at p is marked unknown (unknown[index] != 0), else 0."""
    cdef Py_ssize_t i
    cdef uint8_t bad = 0
    for i in range(n):
        bad = bad | unknown[p[i]]
    return bad != 0


cdef inline int pair_gray_scalar(const uint8_t* a, const uint8_t* b, uint8_t* g, Py_ssize_t n,
                                 const uint8_t* pair, const uint8_t* unknown) noexcept nogil:
    """g[i] = pair[a[i] * 256 + b[i]]: the gray of the per-channel max of the two colours.

    Returns 1 if b holds an index marked unknown where it differs from a, else 0: with every
    index of a known, that is b's whole colour check, done in the same pass."""
    cdef Py_ssize_t i
    cdef uint8_t bad = 0
    for i in range(n):
        g[i] = pair[(<Py_ssize_t> a[i] << 8) | b[i]]
        if a[i] != b[i]:
            bad = bad | unknown[b[i]]
    return bad != 0
