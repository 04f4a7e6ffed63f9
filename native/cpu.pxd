# CPU feature query shared by the native modules (header-only: nothing is imported at run time).
cdef extern from *:
    """
    static int atari_agent_cpu_has_avx2_fma(void) {
    #if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    #else
        return 0;
    #endif
    }
    static int atari_agent_cpu_has_avx512_vbmi(void) {
    #if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
        /* gcc's check also asks the OS (XGETBV) whether it saves the AVX-512 registers */
        __builtin_cpu_init();
        return atari_agent_cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f")
            && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vbmi");
    #else
        return 0;
    #endif
    }
    """
    int atari_agent_cpu_has_avx2_fma() noexcept nogil
    int atari_agent_cpu_has_avx512_vbmi() noexcept nogil
