// The one table of element and block types. A row holds everything pyconv knows of a type: its
// sizes, the rules a row and a tensor of it follow, its per-tensor state, its kernels and how each
// container names it. Nothing outside a type's kernels and its row tests a type by name: code asks
// the row. Python reads the same rows through _core.
//
// A new block type is its kernels plus one row: in the built-in list (core/dtype.cpp), or given to
// register_type from outside the library.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pyconv {

// Type ids. ggml types keep their GGUF ids; types only safetensors knows get ids above 100.
enum class DType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, I2_S = 36, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
  U8 = 101, BOOL = 102, U16 = 103, U32 = 104, U64 = 105, F8_E4M3 = 106, F8_E5M2 = 107, F8_E8M0 = 108,
  F4_E2M1 = 109,
};

// Every type id is below this; the table is an array indexed by id.
constexpr uint32_t kMaxTypeIds = 256;

enum class TypeKind : uint8_t {
  Float,  // f64, f32, f16, bf16 (converted to and from f32 by the casts), f8 (decoded only)
  Plain,  // fixed-size elements copied as they are, never converted (integers, bool)
  Block,  // blocks of elements: quantized from f32, decoded to f32
};

// What a type's kernels are given beside the elements.
struct QuantParams {
  // One scale per tensor, for types that keep one (I2_S: the tensor's largest |x|, in its tail).
  float tensor_scale = 0.0f;
  // The importance of each column of the rows being quantized (llama.cpp's quant_weights: a row of
  // an imatrix), n_per_row values; null when there are none. A quantizer that weighs its rounding
  // error by column reads them; the others ignore them.
  const float* importance = nullptr;
};

// Encodes n_rows rows of n_per_row floats (each row a whole number of blocks) into consecutive blocks.
using QuantizeFn = void (*)(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& params);
// Decodes n elements (a whole number of blocks) into floats.
using DequantizeFn = void (*)(const uint8_t* src, float* dst, size_t n, const QuantParams& params);
// A tensor's parameters from the largest |x| (NaN ignored) of the values its quantizer will see.
using TensorParamsFn = QuantParams (*)(float max_abs);
// The tail_bytes bytes stored after a tensor's blocks, made from its parameters and read back.
using WriteTailFn = void (*)(const QuantParams& params, uint8_t* tail);
using ReadTailFn = QuantParams (*)(const uint8_t* tail);
// The codes in n elements of blocks that the type's quantizer never writes (a sign of damage).
using InvalidCodesFn = uint64_t (*)(const uint8_t* src, size_t n);
// One block of the type from the codes of its block_elems elements and its one scale, stored in
// another layout (a pre-quantized checkpoint's): bits move, no value is computed.
using PackFn = void (*)(const uint8_t* codes, const uint8_t* scale, uint8_t* dst);

struct DTypeTraits {
  DType id = DType::F32;
  const char* name = nullptr;       // lower-case canonical name: "f16", "q8_0", "bool", ...
  TypeKind kind = TypeKind::Plain;
  int32_t ggml_id = -1;             // the type a GGUF tensor info stores; -1: GGUF cannot hold it
  uint32_t block_elems = 1;         // elements per block (1 for Float and Plain types)
  uint32_t block_bytes = 0;         // bytes per block
  uint32_t row_elems = 0;           // a row (the last dim) holds a multiple of this; 0: block_elems
  uint32_t tail_bytes = 0;          // bytes after a tensor's blocks holding per-tensor state
  uint32_t dims = 0;                // the dims a tensor of the type must have; 0: any
  QuantizeFn quantize = nullptr;    // null: pyconv cannot quantize to the type
  DequantizeFn dequantize = nullptr;  // null: pyconv cannot decode it to floats
  // Set when quantizing needs a first pass over the whole tensor, whose statistics give the
  // parameters (stored in the tail when the type has one).
  TensorParamsFn tensor_params = nullptr;
  WriteTailFn write_tail = nullptr;  // set when tail_bytes > 0
  ReadTailFn read_tail = nullptr;    // set when tail_bytes > 0
  InvalidCodesFn invalid_codes = nullptr;  // null: every encoding is one the quantizer may write
  // Set when a source of pack_codes codes scaled by pack_scales values, one per block_elems
  // elements along the rows, can be written as this type without requantizing.
  PackFn pack = nullptr;
  DType pack_codes = DType::F32;
  DType pack_scales = DType::F32;
  const char* safetensors_name = nullptr;  // null: safetensors cannot hold it
  const char* buffer_format = nullptr;     // one element as a Python buffer format ("f", "e", "q"...), or null
  bool ternary = false;             // stores signs and a scale only: every weight is -s, 0 or +s
  bool mainline = false;            // mainline llama.cpp runs a file holding it
  // llama.cpp's general.file_type for a file mostly of this type, given for the types pyconv
  // writes; -1 otherwise.
  int32_t file_type = -1;
  // The type llama.cpp's quantizer writes instead when a row does not fit this type's blocks
  // (llama-quant.cpp's tensor_type_fallback); -1: none, F16 is what remains.
  int32_t fallback = -1;

  bool is_float() const { return kind == TypeKind::Float; }
  bool is_block() const { return kind == TypeKind::Block; }
  bool needs_stats() const { return tensor_params != nullptr; }
};

namespace detail {
// The row of each id (null: no type has it). Holds the built-in rows before any code runs.
extern std::array<const DTypeTraits*, kMaxTypeIds> type_rows;
[[noreturn]] void unknown_type(DType t);
}  // namespace detail

// The row of a type, by id: one array index, so per-element callers pay nothing for the lookup.
inline const DTypeTraits& traits(DType t) {
  const uint32_t id = static_cast<uint32_t>(t);
  const DTypeTraits* row = id < kMaxTypeIds ? detail::type_rows[id] : nullptr;
  if (!row) detail::unknown_type(t);
  return *row;
}

DType dtype_from_name(const std::string& name);  // throws Error on unknown names
// Every row: the built-in ones in their order, then registered ones in registration order.
std::vector<const DTypeTraits*> all_types();

// Adds a row for a type defined outside the library, kernels included; strings are copied. Call it
// before any plan using the type runs (lookups take no lock). Throws Error when the id or the name
// is taken, the id is not below kMaxTypeIds, or the row contradicts itself (sizes, tail functions).
void register_type(const DTypeTraits& row);

// Bytes of n elements, a whole number of blocks, without the tensor tail.
uint64_t row_nbytes(DType t, uint64_t n);
// Bytes of a whole tensor of n elements as stored: its blocks, then its tail.
uint64_t tensor_nbytes(DType t, uint64_t n);

}  // namespace pyconv
