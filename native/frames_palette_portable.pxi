# Palette-index path, portable build: the scalar loops (frames_palette_scalar.pxi) as they are.


cdef inline void even_gray_store(uint8_t* even_gray, int index, uint8_t gray) noexcept nogil:
    pass  # this build looks every pixel up in the pair table


cdef inline int palette_misses(const uint8_t* p, Py_ssize_t n, const uint8_t* unknown,
                               const uint8_t* bitmaps) noexcept nogil:
    return palette_misses_scalar(p, n, unknown)


cdef inline int pair_gray(const uint8_t* a, const uint8_t* b, uint8_t* g, Py_ssize_t n,
                          const uint8_t* pair, const uint8_t* even_gray, const uint8_t* unknown,
                          bint odd) noexcept nogil:
    return pair_gray_scalar(a, b, g, n, pair, unknown)
