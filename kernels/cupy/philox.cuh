// Philox4x32-10 as Triton's tl.rand(seed, offsets) computes it (see gpudnn/reference/philox.py).
// Host-compilable too (plain C++ without CUDA), so tests/test_cupy.py checks it bit for bit
// against the NumPy reference on a machine without a GPU.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define PHILOX_FN __host__ __device__ __forceinline__
#define PHILOX_UNROLL _Pragma("unroll")
#else
#define PHILOX_FN inline
#define PHILOX_UNROLL
#endif

PHILOX_FN unsigned mul_hi(unsigned a, unsigned b) {
#if defined(__CUDA_ARCH__)
    return __umulhi(a, b);
#else
    return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
#endif
}

constexpr unsigned PHILOX_KEY_A = 0x9E3779B9u;
constexpr unsigned PHILOX_KEY_B = 0xBB67AE85u;
constexpr unsigned PHILOX_ROUND_A = 0xD2511F53u;
constexpr unsigned PHILOX_ROUND_B = 0xCD9E8D57u;

// The first output word of Philox4x32-10 for counter (c0, c1, 0, 0) and key (k0, k1).
PHILOX_FN unsigned philox_first_word(unsigned c0, unsigned c1, unsigned k0, unsigned k1) {
    unsigned c2 = 0u, c3 = 0u;
    PHILOX_UNROLL
    for (int round = 0; round < 10; ++round) {
        const unsigned hi_b = mul_hi(PHILOX_ROUND_B, c2), lo_b = PHILOX_ROUND_B * c2;
        const unsigned hi_a = mul_hi(PHILOX_ROUND_A, c0), lo_a = PHILOX_ROUND_A * c0;
        c0 = hi_b ^ c1 ^ k0;
        c1 = lo_b;
        c2 = hi_a ^ c3 ^ k1;
        c3 = lo_a;
        k0 += PHILOX_KEY_A;
        k1 += PHILOX_KEY_B;
    }
    return c0;
}

// tl.rand's uint32 -> [0, 1): reinterpret as int32, x = ~x where negative, times 4.6566127342e-10
PHILOX_FN float uniform_from_bits(unsigned bits) {
    int x = static_cast<int>(bits);
    if (x < 0) x = ~x;
    return static_cast<float>(x) * 4.6566127342e-10f;
}

// tl.rand(seed, counter) for one int64 counter: key = the seed's low / high words, counter
// words c0 = low, c1 = high (arithmetic shift), c2 = c3 = 0
PHILOX_FN float philox_uniform(unsigned long long seed, long long counter) {
    return uniform_from_bits(philox_first_word(
        static_cast<unsigned>(counter), static_cast<unsigned>(counter >> 32),
        static_cast<unsigned>(seed), static_cast<unsigned>(seed >> 32)));
}
