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

// quant_ref::levels_with_min (kernels/reference.h) on eight groups of n elements at once, one per
// lane: group g is x + n g with weights w + n g; its levels go to levels + n g, its scale and
// minimum to scales[g] and the_mins[g], with the scalar function's bits.
void levels_with_min_x8(int n, int nmax, const float* x, const float* w, uint8_t* levels, float* scales, float* the_mins,
                        float rmin, float rdelta, int nstep, bool use_mad);

// The signed level search of Q6_K, Q3_K, Q4_0 and Q5_0 (kernels/quant_search.cpp: signed_levels) on
// eight groups of n elements at once, laid out as for levels_with_min_x8; w null: weights x^2.
void signed_levels_x8(int n, int nmax, const float* x, const float* w, int8_t* levels, float* scales);

// The IQ4 group scale search (kernels/quant_search.cpp: iq4_group_scale) on eight groups of 32 at
// once, group g at x + 32 g with weights w + 32 g.
void iq4_scales_x8(const float* x, const float* w, float* scales);

// Absmean ternarization (kernels/quant.h); results equal the scalar quant_ref ones bit for bit.
// abs_stats_avx2 sets the eight lanes' sums of |x| and the largest and smallest non-zero |x|.
void abs_stats_avx2(const float* x, size_t n, double lanes[8], float* max_abs, float* min_nonzero_abs);
void ternarize_avx2(float* x, size_t n, float s, float magnitude);

}  // namespace pyconv::simd
