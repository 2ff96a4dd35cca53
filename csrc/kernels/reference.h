// The scalar reference kernels that the SIMD files hand work back to (vectors holding Inf or NaN,
// blocks short of a group, tails). Declarations only, defined in baseline files: a SIMD file that
// included a function body (an inline helper, a template) could emit its own AVX2 copy as a weak
// symbol, and the linker may keep that copy for baseline callers, which then fault on CPUs without
// AVX2. tests/native checks that the AVX2 objects define nothing but their entry points.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pyconv {

// Float conversions of n elements, with the rounding and NaN rules of kernels/cast.h.
namespace cast_ref {
void f32_to_f16(const float* src, uint16_t* dst, size_t n);
void f16_to_f32(const uint16_t* src, float* dst, size_t n);
void f32_to_bf16(const float* src, uint16_t* dst, size_t n);
void bf16_to_f32(const uint16_t* src, float* dst, size_t n);
void bf16_to_f16(const uint16_t* src, uint16_t* dst, size_t n);
void f16_to_bf16(const uint16_t* src, uint16_t* dst, size_t n);
void f8_e4m3_to_f32(const uint8_t* src, float* dst, size_t n);
void f8_e5m2_to_f32(const uint8_t* src, float* dst, size_t n);
void f8_e8m0_to_f32(const uint8_t* src, float* dst, size_t n);
}  // namespace cast_ref

namespace quant_ref {

// A gguf block scale d = absmax / divisor as stored (f16 bits) and the multiplier 1/d its codes
// use; 1/d that is not finite (d == 0, or d so small that f16(d) is 0 anyway) becomes 0, which
// makes every code zero, as gguf-py's numpy gives.
struct BlockScale {
  uint16_t d_f16;
  float id;
};
BlockScale block_scale(float absmax, float divisor);

void q8_0(const float* x, uint8_t* y, size_t n);
void tq2_0(const float* x, uint8_t* y, size_t n);
void i2_s(const float* x, uint8_t* y, size_t n);
void ternarize(float* x, size_t n, float s, float magnitude);

// The searching quantizers (kernels/quant_search.cpp), bit-exact with ggml_quantize_chunk: n_rows
// rows of n_per_row floats; importance is one weight per column (an imatrix row) or null, and
// selects ggml's weighted search where ggml has one.
void q4_0(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance);
void q4_1(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance);
void q5_0(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance);
void q5_1(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance);
void q2_k(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance);
void q3_k(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance);
void q4_k(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance);
void q5_k(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance);
void q6_k(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance);
void iq4_nl(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance);
void iq4_xs(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance);

// Levels 0..nmax of n (at most 32) elements with a scale and a minimum, x ~ scale * l - the_min,
// searched over nstep + 1 (at least 1) trial scales (rmin + rdelta * step + nmax) / (max - min), each
// refined by weighted least squares and kept when its error, the sum of weights times |diff|
// (use_mad) or diff^2, is lower. Returns the scale; trial is n bytes of scratch.
float levels_with_min(int n, int nmax, const float* x, const float* weights, uint8_t* levels, float* the_min,
                      uint8_t* trial, float rmin, float rdelta, int nstep, bool use_mad);

// Adds |x[i]| to lanes[i % 8] and folds |x[i]| into the largest and into the smallest that I2_S
// does not read as zero (NaN ignored): the scalar core of abs_stats (kernels/quant.h).
void accumulate_abs(const float* x, size_t n, double lanes[8], float* max_abs, float* min_nonzero_abs);
// The smallest float I2_S does not read as zero (|x| < 1e-6 compared in double).
float i2s_smallest_nonzero();

}  // namespace quant_ref
}  // namespace pyconv
