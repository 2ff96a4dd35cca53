// Block quantizers and dequantizers for ggml types. Quantizers are bit-exact with gguf-py's numpy
// reference (gguf.quants), which is itself tested bit for bit against ggml's C code.
#pragma once
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

// Encodes n floats (a whole number of blocks) into dst.
void quantize(DType t, const float* src, void* dst, size_t n, const QuantParams& params);
// Decodes n elements (a whole number of blocks) into floats.
void dequantize(DType t, const void* src, float* dst, size_t n, const QuantParams& params);

// The 32 bytes that follow an I2_S tensor's packed codes: f32 scale, then 28 zero bytes.
void i2s_tail(float scale, uint8_t out[32]);

}  // namespace pyconv
