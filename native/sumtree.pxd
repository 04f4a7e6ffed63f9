# Sum-tree over a power-of-two number of leaves, stored as a flat array of 2 * leaves doubles:
# node i has children 2i and 2i+1, the root is node 1, leaf j is node leaves + j.
# Header-only (inlined into each module that cimports it). Parents are recomputed from their
# children on every update, so rounding never accumulates.


cdef inline void tree_set(double* tree, Py_ssize_t leaves, Py_ssize_t j, double value) noexcept nogil:
    cdef Py_ssize_t i = leaves + j
    tree[i] = value
    i >>= 1
    while i >= 1:
        tree[i] = tree[2 * i] + tree[2 * i + 1]
        i >>= 1


cdef inline Py_ssize_t tree_find(const double* tree, Py_ssize_t leaves, double u) noexcept nogil:
    """Leaf j with prefix(j) <= u < prefix(j) + tree[leaves + j], for u in [0, tree[1]). O(log leaves)."""
    cdef Py_ssize_t i = 1
    cdef double left
    while i < leaves:
        left = tree[2 * i]
        if u < left:
            i = 2 * i
        else:
            u -= left
            i = 2 * i + 1
    return i - leaves
