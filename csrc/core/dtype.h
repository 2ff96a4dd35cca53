// Element types of every container pyconv reads or writes. ggml types keep their GGUF ids so the
// GGUF writer can use the value directly; types only safetensors knows get ids above 100.
#pragma once
#include <cstdint>
#include <string>

namespace pyconv {

enum class DType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, I2_S = 36, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
  U8 = 101, BOOL = 102, U16 = 103, U32 = 104, U64 = 105, F8_E4M3 = 106, F8_E5M2 = 107,
};

struct DTypeTraits {
  const char* name;        // lower-case canonical name: "f16", "q8_0", "bool", ...
  uint32_t block_elems;    // elements per block (1 for plain types)
  uint32_t block_bytes;    // bytes per block
  bool is_float;           // f16/bf16/f32/f64: converts to and from f32
  bool is_quant;           // block-quantized ggml type
};

const DTypeTraits& traits(DType t);
bool dtype_known(uint32_t id);
DType dtype_from_name(const std::string& name);  // throws Error on unknown names

// Bytes of `n` elements; n must be a whole number of blocks. I2_S adds its 32-byte tensor tail
// only through tensor_nbytes.
uint64_t row_nbytes(DType t, uint64_t n);
// Bytes of a whole tensor as stored (I2_S: n/4 packed + f32 scale + 28 zero bytes).
uint64_t tensor_nbytes(DType t, uint64_t n);

}  // namespace pyconv
