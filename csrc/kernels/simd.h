// Kernel entry points with one implementation per ISA; dispatch picks one at run time.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pyconv::simd {

#ifdef PYCONV_HAVE_X86_SIMD
bool cpu_has_avx2();  // AVX2 + F16C + FMA
#else
// Other architectures run the scalar reference; the AVX2 entry points are never called there.
inline bool cpu_has_avx2() { return false; }
#endif

void f32_to_f16_avx2(const float* src, uint16_t* dst, size_t n);
void f16_to_f32_avx2(const uint16_t* src, float* dst, size_t n);
void f32_to_bf16_avx2(const float* src, uint16_t* dst, size_t n);
void bf16_to_f32_avx2(const uint16_t* src, float* dst, size_t n);
void bf16_to_f16_avx2(const uint16_t* src, uint16_t* dst, size_t n);
void f16_to_bf16_avx2(const uint16_t* src, uint16_t* dst, size_t n);

// Quantizers over whole blocks (kernels/quant_avx2.cpp); bytes equal the scalar quant_ref ones.
void quantize_q8_0_avx2(const float* x, uint8_t* y, size_t n);
void quantize_tq2_0_avx2(const float* x, uint8_t* y, size_t n);
void quantize_i2_s_avx2(const float* x, uint8_t* y, size_t n);

// Absmean ternarization (kernels/quant.h); results equal the scalar quant_ref ones bit for bit.
// abs_stats_avx2 sets the eight lanes' sums of |x| and the largest and smallest non-zero |x|.
void abs_stats_avx2(const float* x, size_t n, double lanes[8], float* max_abs, float* min_nonzero_abs);
void ternarize_avx2(float* x, size_t n, float s, float magnitude);

}  // namespace pyconv::simd
