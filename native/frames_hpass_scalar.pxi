# Horizontal pass, portable build: the sparse per-output taps (see horizontal_row_scalar).


cdef inline void horizontal_row(const float* S, float* F, const HorizontalTables* ht) noexcept nogil:
    horizontal_row_scalar(S, F, ht)
