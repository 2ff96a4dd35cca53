#include "core/dtype.h"

#include <deque>
#include <iterator>
#include <mutex>

#include "core/error.h"
#include "kernels/quant.h"

namespace pyconv {
namespace {

namespace bk = block_kernels;

constexpr DTypeTraits floating(DType id, const char* name, uint32_t bytes, const char* safetensors, const char* format,
                               int32_t file_type) {
  DTypeTraits r;
  r.id = id;
  r.name = name;
  r.kind = TypeKind::Float;
  r.ggml_id = static_cast<int32_t>(id);
  r.block_bytes = bytes;
  r.row_elems = 1;
  r.safetensors_name = safetensors;
  r.buffer_format = format;
  r.mainline = true;
  r.file_type = file_type;
  return r;
}

// The 8-bit floats of pre-quantized checkpoints: decoded exactly to f32 by the casts, never written
// by them, and unknown to GGUF.
constexpr DTypeTraits float8(DType id, const char* name, const char* safetensors) {
  DTypeTraits r = floating(id, name, 1, safetensors, nullptr, -1);
  r.ggml_id = -1;
  r.mainline = false;
  return r;
}

// Integers and bool: GGUF holds some of them (ggml ids below 100), safetensors all.
constexpr DTypeTraits plain(DType id, const char* name, uint32_t bytes, const char* safetensors, const char* format) {
  DTypeTraits r;
  r.id = id;
  r.name = name;
  r.kind = TypeKind::Plain;
  r.ggml_id = static_cast<uint32_t>(id) < 100 ? static_cast<int32_t>(id) : -1;
  r.block_bytes = bytes;
  r.row_elems = 1;
  r.safetensors_name = safetensors;
  r.buffer_format = format;
  r.mainline = r.ggml_id >= 0;
  return r;
}

// A ggml block type; sizes agree with gguf-py's GGML_QUANT_SIZES.
constexpr DTypeTraits block(DType id, const char* name, uint32_t elems, uint32_t bytes, DequantizeFn dequantize = nullptr,
                            QuantizeFn quantize = nullptr, int32_t file_type = -1) {
  DTypeTraits r;
  r.id = id;
  r.name = name;
  r.kind = TypeKind::Block;
  r.ggml_id = static_cast<int32_t>(id);
  r.block_elems = elems;
  r.block_bytes = bytes;
  r.row_elems = elems;
  r.dequantize = dequantize;
  r.quantize = quantize;
  r.mainline = true;
  r.file_type = file_type;
  return r;
}

// A 256-element type whose rows of another length llama.cpp writes as `to` (llama-quant.cpp).
constexpr DTypeTraits falls_back(DTypeTraits r, DType to) {
  r.fallback = static_cast<int32_t>(to);
  return r;
}

constexpr DTypeTraits ternary(DTypeTraits r) {
  r.ternary = true;
  return r;
}

constexpr DTypeTraits tq2_0() {
  DTypeTraits r = ternary(block(DType::TQ2_0, "tq2_0", 256, 66, bk::dequantize_tq2_0, bk::quantize_tq2_0, 37));
  r.invalid_codes = bk::invalid_codes_tq2_0;
  return r;
}

// BitNet's type (docs/i2s.md): four 2-bit codes per byte in blocks of 128 elements, signs only;
// the tensor's scale (its largest |x|) follows the codes in a 32-byte tail. BitNet.cpp runs it,
// mainline llama.cpp does not; BitNet's llama.cpp fork numbers its file type 40.
constexpr DTypeTraits i2_s() {
  DTypeTraits r = ternary(block(DType::I2_S, "i2_s", 4, 1, bk::dequantize_i2_s, bk::quantize_i2_s, 40));
  r.row_elems = 128;
  r.tail_bytes = 32;
  r.dims = 2;
  r.tensor_params = bk::i2_s_params;
  r.write_tail = bk::write_i2_s_tail;
  r.read_tail = bk::read_i2_s_tail;
  r.invalid_codes = bk::invalid_codes_i2_s;
  r.mainline = false;
  return r;
}

// The codes of MX formats without their scales (gpt-oss's *_blocks): a pre-quantized checkpoint's
// source, decoded and multiplied by its e8m0 scales; no container stores it under this type.
constexpr DTypeTraits f4_e2m1() {
  DTypeTraits r = block(DType::F4_E2M1, "f4_e2m1", 2, 1, bk::dequantize_f4_e2m1);
  r.ggml_id = -1;
  r.mainline = false;
  return r;
}

// ggml's MXFP4, which gpt-oss's experts (f4_e2m1 codes, f8_e8m0 scales) are repacked into.
constexpr DTypeTraits mxfp4() {
  DTypeTraits r = block(DType::MXFP4, "mxfp4", 32, 17, bk::dequantize_mxfp4, nullptr, 38);  // LLAMA_FTYPE_MOSTLY_MXFP4_MOE
  r.pack = bk::pack_mxfp4;
  r.pack_codes = DType::F4_E2M1;
  r.pack_scales = DType::F8_E8M0;
  return r;
}

// llama.cpp's file types (LLAMA_FTYPE_*) are given for the types pyconv writes.
constexpr DTypeTraits kBuiltin[] = {
    floating(DType::F32, "f32", 4, "F32", "f", 0),
    floating(DType::F16, "f16", 2, "F16", "e", 1),
    floating(DType::BF16, "bf16", 2, "BF16", nullptr, 32),
    floating(DType::F64, "f64", 8, "F64", "d", -1),
    plain(DType::I8, "i8", 1, "I8", "b"),
    plain(DType::I16, "i16", 2, "I16", "h"),
    plain(DType::I32, "i32", 4, "I32", "i"),
    plain(DType::I64, "i64", 8, "I64", "q"),
    plain(DType::U8, "u8", 1, "U8", "B"),
    plain(DType::BOOL, "bool", 1, "BOOL", "?"),
    plain(DType::U16, "u16", 2, "U16", "H"),
    plain(DType::U32, "u32", 4, "U32", "I"),
    plain(DType::U64, "u64", 8, "U64", "Q"),
    float8(DType::F8_E4M3, "f8_e4m3", "F8_E4M3"),
    float8(DType::F8_E5M2, "f8_e5m2", "F8_E5M2"),
    float8(DType::F8_E8M0, "f8_e8m0", "F8_E8M0"),
    f4_e2m1(),
    block(DType::Q4_0, "q4_0", 32, 18, bk::dequantize_q4_0, bk::quantize_q4_0, 2),
    block(DType::Q4_1, "q4_1", 32, 20, bk::dequantize_q4_1, bk::quantize_q4_1, 3),
    block(DType::Q5_0, "q5_0", 32, 22, bk::dequantize_q5_0, bk::quantize_q5_0, 8),
    block(DType::Q5_1, "q5_1", 32, 24, bk::dequantize_q5_1, bk::quantize_q5_1, 9),
    block(DType::Q8_0, "q8_0", 32, 34, bk::dequantize_q8_0, bk::quantize_q8_0, 7),
    block(DType::Q8_1, "q8_1", 32, 40),
    falls_back(block(DType::Q2_K, "q2_k", 256, 84, bk::dequantize_q2_k, bk::quantize_q2_k, 10), DType::Q4_0),
    falls_back(block(DType::Q3_K, "q3_k", 256, 110, bk::dequantize_q3_k, bk::quantize_q3_k, 12), DType::Q4_0),
    falls_back(block(DType::Q4_K, "q4_k", 256, 144, bk::dequantize_q4_k, bk::quantize_q4_k, 15), DType::Q5_0),
    falls_back(block(DType::Q5_K, "q5_k", 256, 176, bk::dequantize_q5_k, bk::quantize_q5_k, 17), DType::Q5_1),
    falls_back(block(DType::Q6_K, "q6_k", 256, 210, bk::dequantize_q6_k, bk::quantize_q6_k, 18), DType::Q8_0),
    block(DType::Q8_K, "q8_k", 256, 292),
    block(DType::IQ2_XXS, "iq2_xxs", 256, 66),
    block(DType::IQ2_XS, "iq2_xs", 256, 74),
    block(DType::IQ3_XXS, "iq3_xxs", 256, 98),
    block(DType::IQ1_S, "iq1_s", 256, 50),
    block(DType::IQ4_NL, "iq4_nl", 32, 18, bk::dequantize_iq4_nl, bk::quantize_iq4_nl, 25),
    block(DType::IQ3_S, "iq3_s", 256, 110),
    block(DType::IQ2_S, "iq2_s", 256, 82),
    falls_back(block(DType::IQ4_XS, "iq4_xs", 256, 136, bk::dequantize_iq4_xs, bk::quantize_iq4_xs, 30), DType::IQ4_NL),
    block(DType::IQ1_M, "iq1_m", 256, 56),
    ternary(block(DType::TQ1_0, "tq1_0", 256, 54, bk::dequantize_tq1_0, bk::quantize_tq1_0, 36)),
    tq2_0(),
    i2_s(),
    mxfp4(),
    block(DType::NVFP4, "nvfp4", 64, 36),
    block(DType::Q1_0, "q1_0", 128, 18),
};

constexpr std::array<const DTypeTraits*, kMaxTypeIds> index_by_id() {
  std::array<const DTypeTraits*, kMaxTypeIds> rows{};
  for (const DTypeTraits& r : kBuiltin) rows[static_cast<uint32_t>(r.id)] = &r;
  return rows;
}

constexpr bool same_name(const char* a, const char* b) {
  while (*a && *a == *b) ++a, ++b;
  return *a == *b;
}

constexpr bool builtin_rows_are_distinct() {
  for (size_t i = 0; i < std::size(kBuiltin); ++i)
    for (size_t j = i + 1; j < std::size(kBuiltin); ++j)
      if (kBuiltin[i].id == kBuiltin[j].id || same_name(kBuiltin[i].name, kBuiltin[j].name)) return false;
  return true;
}
static_assert(builtin_rows_are_distinct(), "two built-in rows share an id or a name");

// Rows added by register_type, with their strings; a deque never moves what it holds.
struct Registered {
  DTypeTraits row;
  std::string name, safetensors_name, buffer_format;
};

struct Registry {
  std::mutex mu;
  std::deque<Registered> rows;
};

Registry& registry() {
  static Registry r;
  return r;
}

const DTypeTraits* find_builtin(const std::string& name) {
  for (const DTypeTraits& r : kBuiltin)
    if (name == r.name) return &r;
  return nullptr;
}

const DTypeTraits* find_registered(const Registry& reg, const std::string& name) {
  for (const Registered& r : reg.rows)
    if (name == r.name) return &r.row;
  return nullptr;
}

}  // namespace

namespace detail {

// Constant-initialised from the built-in rows, so it is complete before any dynamic initialiser runs.
std::array<const DTypeTraits*, kMaxTypeIds> type_rows = index_by_id();

void unknown_type(DType t) { throw Error("unknown dtype id " + std::to_string(static_cast<uint32_t>(t))); }

}  // namespace detail

DType dtype_from_name(const std::string& name) {
  if (const DTypeTraits* r = find_builtin(name)) return r->id;
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mu);
  if (const DTypeTraits* r = find_registered(reg, name)) return r->id;
  throw Error("unknown dtype '" + name + "'");
}

std::vector<const DTypeTraits*> all_types() {
  std::vector<const DTypeTraits*> out;
  for (const DTypeTraits& r : kBuiltin) out.push_back(&r);
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mu);
  for (const Registered& r : reg.rows) out.push_back(&r.row);
  return out;
}

void register_type(const DTypeTraits& row) {
  const uint32_t id = static_cast<uint32_t>(row.id);
  const std::string name = row.name ? row.name : "";
  const std::string what = "cannot register type '" + name + "' (id " + std::to_string(id) + "): ";
  if (name.empty()) throw Error(what + "it has no name");
  if (id >= kMaxTypeIds) throw Error(what + "ids are below " + std::to_string(kMaxTypeIds));
  if (row.block_elems == 0 || row.block_bytes == 0) throw Error(what + "blocks need elements and bytes");
  if (row.kind != TypeKind::Block && row.block_elems != 1) throw Error(what + "only block types have blocks of several elements");
  if (row.row_elems % row.block_elems != 0) throw Error(what + "row_elems must be a multiple of block_elems");
  if (row.fallback >= 0 && (static_cast<uint32_t>(row.fallback) >= kMaxTypeIds || !detail::type_rows[static_cast<uint32_t>(row.fallback)]))
    throw Error(what + "its fallback type id " + std::to_string(row.fallback) + " has no row");
  if ((row.tail_bytes != 0) != (row.write_tail && row.read_tail))
    throw Error(what + "a tail needs write_tail and read_tail, and they need a tail");
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mu);
  if (detail::type_rows[id]) throw Error(what + "the id is taken by " + detail::type_rows[id]->name);
  if (find_builtin(name) || find_registered(reg, name)) throw Error(what + "the name is taken");
  Registered& r = reg.rows.emplace_back();
  r.row = row;
  r.name = name;
  r.row.name = r.name.c_str();
  if (row.row_elems == 0) r.row.row_elems = row.block_elems;
  if (row.safetensors_name) r.row.safetensors_name = (r.safetensors_name = row.safetensors_name).c_str();
  if (row.buffer_format) r.row.buffer_format = (r.buffer_format = row.buffer_format).c_str();
  detail::type_rows[id] = &r.row;
}

uint64_t row_nbytes(DType t, uint64_t n) {
  const DTypeTraits& tr = traits(t);
  if (n % tr.block_elems != 0)
    throw Error(std::string("a ") + tr.name + " row needs a multiple of " + std::to_string(tr.block_elems) +
                " elements, got " + std::to_string(n));
  return n / tr.block_elems * tr.block_bytes;
}

uint64_t tensor_nbytes(DType t, uint64_t n) { return row_nbytes(t, n) + traits(t).tail_bytes; }

}  // namespace pyconv
