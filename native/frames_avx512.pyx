# AVX-512 build of the same frame kernel (AVX2 + FMA passes, AVX-512 VBMI palette lookups);
# agent.native imports it only when the CPU has AVX-512 F, BW and VBMI as well as AVX2 + FMA.
VARIANT = "avx512"
include "frames.pxi"
include "frames_hpass_avx2.pxi"
include "frames_palette_avx512.pxi"
