# Portable build of the frame kernel (any CPU the compiler targets by default).
VARIANT = "portable"
include "frames.pxi"
include "frames_hpass_scalar.pxi"
include "frames_palette_portable.pxi"
