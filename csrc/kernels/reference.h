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

// Adds |x[i]| to lanes[i % 8] and folds |x[i]| into the largest and into the smallest that I2_S
// does not read as zero (NaN ignored): the scalar core of abs_stats (kernels/quant.h).
void accumulate_abs(const float* x, size_t n, double lanes[8], float* max_abs, float* min_nonzero_abs);
// The smallest float I2_S does not read as zero (|x| < 1e-6 compared in double).
float i2s_smallest_nonzero();

}  // namespace quant_ref
}  // namespace pyconv
