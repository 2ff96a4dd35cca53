#include "core/dtype.h"

#include "core/error.h"

namespace pyconv {
namespace {

struct Entry {
  DType type;
  DTypeTraits traits;
};

// Block sizes agree with gguf-py's GGML_QUANT_SIZES; I2_S is BitNet's type (4 codes per byte).
constexpr Entry kTable[] = {
    {DType::F32, {"f32", 1, 4, true, false}},
    {DType::F16, {"f16", 1, 2, true, false}},
    {DType::BF16, {"bf16", 1, 2, true, false}},
    {DType::F64, {"f64", 1, 8, true, false}},
    {DType::I8, {"i8", 1, 1, false, false}},
    {DType::I16, {"i16", 1, 2, false, false}},
    {DType::I32, {"i32", 1, 4, false, false}},
    {DType::I64, {"i64", 1, 8, false, false}},
    {DType::U8, {"u8", 1, 1, false, false}},
    {DType::BOOL, {"bool", 1, 1, false, false}},
    {DType::U16, {"u16", 1, 2, false, false}},
    {DType::U32, {"u32", 1, 4, false, false}},
    {DType::U64, {"u64", 1, 8, false, false}},
    {DType::F8_E4M3, {"f8_e4m3", 1, 1, false, false}},
    {DType::F8_E5M2, {"f8_e5m2", 1, 1, false, false}},
    {DType::Q4_0, {"q4_0", 32, 18, false, true}},
    {DType::Q4_1, {"q4_1", 32, 20, false, true}},
    {DType::Q5_0, {"q5_0", 32, 22, false, true}},
    {DType::Q5_1, {"q5_1", 32, 24, false, true}},
    {DType::Q8_0, {"q8_0", 32, 34, false, true}},
    {DType::Q8_1, {"q8_1", 32, 40, false, true}},
    {DType::Q2_K, {"q2_k", 256, 84, false, true}},
    {DType::Q3_K, {"q3_k", 256, 110, false, true}},
    {DType::Q4_K, {"q4_k", 256, 144, false, true}},
    {DType::Q5_K, {"q5_k", 256, 176, false, true}},
    {DType::Q6_K, {"q6_k", 256, 210, false, true}},
    {DType::Q8_K, {"q8_k", 256, 292, false, true}},
    {DType::IQ2_XXS, {"iq2_xxs", 256, 66, false, true}},
    {DType::IQ2_XS, {"iq2_xs", 256, 74, false, true}},
    {DType::IQ3_XXS, {"iq3_xxs", 256, 98, false, true}},
    {DType::IQ1_S, {"iq1_s", 256, 50, false, true}},
    {DType::IQ4_NL, {"iq4_nl", 32, 18, false, true}},
    {DType::IQ3_S, {"iq3_s", 256, 110, false, true}},
    {DType::IQ2_S, {"iq2_s", 256, 82, false, true}},
    {DType::IQ4_XS, {"iq4_xs", 256, 136, false, true}},
    {DType::IQ1_M, {"iq1_m", 256, 56, false, true}},
    {DType::TQ1_0, {"tq1_0", 256, 54, false, true}},
    {DType::TQ2_0, {"tq2_0", 256, 66, false, true}},
    {DType::I2_S, {"i2_s", 4, 1, false, true}},
    {DType::MXFP4, {"mxfp4", 32, 17, false, true}},
    {DType::NVFP4, {"nvfp4", 64, 36, false, true}},
    {DType::Q1_0, {"q1_0", 128, 18, false, true}},
};

const Entry* find(uint32_t id) {
  for (const Entry& e : kTable)
    if (static_cast<uint32_t>(e.type) == id) return &e;
  return nullptr;
}

}  // namespace

const DTypeTraits& traits(DType t) {
  const Entry* e = find(static_cast<uint32_t>(t));
  if (!e) throw Error("unknown dtype id " + std::to_string(static_cast<uint32_t>(t)));
  return e->traits;
}

bool dtype_known(uint32_t id) { return find(id) != nullptr; }

DType dtype_from_name(const std::string& name) {
  for (const Entry& e : kTable)
    if (name == e.traits.name) return e.type;
  throw Error("unknown dtype '" + name + "'");
}

uint64_t row_nbytes(DType t, uint64_t n) {
  const DTypeTraits& tr = traits(t);
  if (n % tr.block_elems != 0)
    throw Error(std::string("a ") + tr.name + " row needs a multiple of " + std::to_string(tr.block_elems) +
                " elements, got " + std::to_string(n));
  return n / tr.block_elems * tr.block_bytes;
}

uint64_t tensor_nbytes(DType t, uint64_t n) {
  if (t == DType::I2_S) return row_nbytes(t, n) + 32;
  return row_nbytes(t, n);
}

}  // namespace pyconv
