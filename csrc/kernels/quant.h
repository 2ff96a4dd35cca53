// Block quantizers and dequantizers for ggml types. Q8_0 and the ternary quantizers are bit-exact
// with gguf-py's numpy reference (gguf.quants), which is itself tested bit for bit against ggml's C
// code; the legacy, K and IQ4 quantizers with ggml_quantize_chunk; I2_S follows BitNet's C
// quantizer (docs/i2s.md). Dequantizers repeat gguf-py's f32 operations in its order.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace pyconv {

// Encodes n_rows rows of n_per_row floats with the type's quantizer (its row's kernel). Throws Error
// when the type has none or the rows do not fit its blocks (core/dtype.h: row_elems).
void quantize(DType t, const float* src, void* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
// Decodes n elements (a whole number of blocks) with the type's decoder; Error when it has none.
void dequantize(DType t, const void* src, float* dst, size_t n, const QuantParams& params);

// A whole tensor as stored (tensor_nbytes bytes: blocks, then the type's tail). quantize_tensor runs
// the statistics pass first when the type needs one; dequantize_tensor reads the parameters back
// from the tail.
// importance: one weight per column (QuantParams::importance), or null.
void quantize_tensor(DType t, const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row,
                     const float* importance = nullptr);
void dequantize_tensor(DType t, const uint8_t* src, float* dst, size_t n);
// The parameters kept in the tail of a tensor of n elements stored at `data` (none: defaults).
QuantParams tensor_params_from_tail(DType t, const uint8_t* data, size_t n);
// The codes in n elements of blocks that t's quantizer never writes (0 for types without such codes).
uint64_t invalid_codes(DType t, const uint8_t* src, size_t n);

// Decodes n bytes as bit fields: dst[i] = (((src[i] >> shift) & (2^bits - 1)) + offset) * scale.
void unpack_bits(const uint8_t* src, float* dst, size_t n, uint32_t bits, uint32_t shift, float offset, float scale);

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

// The kernels of the built-in block types, as their rows in core/dtype.cpp name them. Each
// quantizer picks the SIMD or the scalar path; both give the same bytes.
namespace block_kernels {

void quantize_q8_0(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
void quantize_tq1_0(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
void quantize_tq2_0(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
// Signs only, blocks of 128 elements in 32 bytes: the scale is the tensor's (params.tensor_scale).
void quantize_i2_s(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
// llama.cpp's legacy, K and IQ4 quantizers (kernels/quant_search.cpp); params.importance, when set,
// selects ggml's importance-weighted search.
void quantize_q4_0(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
void quantize_q4_1(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
void quantize_q5_0(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
void quantize_q5_1(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
void quantize_q2_k(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
void quantize_q3_k(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
void quantize_q4_k(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
void quantize_q5_k(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
void quantize_q6_k(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
void quantize_iq4_nl(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
void quantize_iq4_xs(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);

void dequantize_q8_0(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
void dequantize_q4_0(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
void dequantize_q4_1(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
void dequantize_q5_0(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
void dequantize_q5_1(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
void dequantize_q2_k(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
void dequantize_q3_k(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
void dequantize_q4_k(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
void dequantize_q5_k(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
void dequantize_q6_k(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
void dequantize_iq4_nl(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
void dequantize_iq4_xs(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
void dequantize_tq1_0(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
void dequantize_tq2_0(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
// ggml's MXFP4 blocks: an e8m0 scale byte, then 16 bytes whose low nibbles are elements 0..15 and
// high nibbles 16..31, e2m1 codes.
void dequantize_mxfp4(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
// One MXFP4 block from 32 e2m1 codes in f4_e2m1's order (16 bytes) and their e8m0 scale byte.
void pack_mxfp4(const uint8_t* codes, const uint8_t* scale, uint8_t* dst);
// Bare e2m1 codes, two a byte, the low nibble first (the element order of the OCP MX formats and
// of gpt-oss's *_blocks tensors), without scales: 0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6.
void dequantize_f4_e2m1(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
// Codes -1, 0, +1 (a code of 3 reads as 0, as BitNet's reader does) times params.tensor_scale.
void dequantize_i2_s(const uint8_t* src, float* dst, size_t n, const QuantParams& params);

// Two-bit codes of 3, which TQ2_0's and I2_S's quantizers never write.
uint64_t invalid_codes_tq2_0(const uint8_t* src, size_t n);
uint64_t invalid_codes_i2_s(const uint8_t* src, size_t n);

// I2_S's per-tensor state: the scale is the largest |x|, stored as an f32 followed by 28 zero bytes.
QuantParams i2_s_params(float max_abs);
void write_i2_s_tail(const QuantParams& params, uint8_t* tail);
QuantParams read_i2_s_tail(const uint8_t* tail);

}  // namespace block_kernels
}  // namespace pyconv
