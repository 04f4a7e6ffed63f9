# AVX2 + FMA build of the same frame kernel; agent.native imports it only when the CPU has both.
VARIANT = "avx2"
include "frames.pxi"
include "frames_hpass_avx2.pxi"
include "frames_palette_avx2.pxi"
