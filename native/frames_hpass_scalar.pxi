# Horizontal pass, portable build: the sparse per-output taps (see horizontal_row_scalar).


cdef inline void horizontal_row(const float* S, float* F, const HorizontalTables* ht) noexcept nogil:
    horizontal_row_scalar(S, F, ht)


cdef inline void gray_row(const uint16_t* V, uint8_t* O, const GrayTables* gt) noexcept nogil:
    if gt.dense != NULL:
        gray_row_dense(V, O, gt)
    else:
        gray_row_scalar(V, O, gt)
