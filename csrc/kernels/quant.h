// Block quantizers and dequantizers for ggml types. Quantizers are bit-exact with gguf-py's numpy
// reference (gguf.quants), which is itself tested bit for bit against ggml's C code; I2_S follows
// BitNet's C quantizer (specs/i2s.md). Dequantizers repeat gguf-py's f32 operations in its order.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace pyconv {

// Per-tensor parameters some types need (I2_S stores one f32 scale per tensor).
struct QuantParams {
  float tensor_scale = 0.0f;
};

bool can_quantize(DType t);
bool can_dequantize(DType t);

// Encodes n floats (a whole number of blocks) into dst. I2_S writes only its n/4 packed bytes
// (blocks of 128 elements); the tensor tail comes from i2s_tail.
void quantize(DType t, const float* src, void* dst, size_t n, const QuantParams& params);
// Decodes n elements (a whole number of blocks) into floats. I2_S reads n/4 packed bytes and
// multiplies by params.tensor_scale.
void dequantize(DType t, const void* src, float* dst, size_t n, const QuantParams& params);

// Decodes n bytes as bit fields: dst[i] = (((src[i] >> shift) & (2^bits - 1)) + offset) * scale.
void unpack_bits(const uint8_t* src, float* dst, size_t n, uint32_t bits, uint32_t shift, float offset, float scale);

// The 32 bytes that follow an I2_S tensor's packed codes: f32 scale, then 28 zero bytes.
void i2s_tail(float scale, uint8_t out[32]);

// What absmean ternarization needs to know of a tensor, over n floats: the sum of |x| in double,
// accumulated in eight lanes (lane j takes elements j, j + 8, ...) joined as ((0+1)+(2+3))+((4+5)+(6+7))
// so that every ISA gives the same sum; the largest |x| and the smallest one I2_S does not read as
// zero (INFINITY if none), both ignoring NaN.
struct AbsStats {
  double sum_abs = 0.0;
  float max_abs = 0.0f;
  float min_nonzero_abs = INFINITY;
};
AbsStats abs_stats(const float* x, size_t n);

// Absmean ternarization in place: x = clamp(round_half_even(x * s), -1, 1) * magnitude, with
// magnitude = 1/s as the model rounds it. Zeros keep their sign; NaN becomes -magnitude.
void ternarize(float* x, size_t n, float s, float magnitude);

}  // namespace pyconv
