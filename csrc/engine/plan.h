// The plan the Python side hands to the engine: inputs, sources (virtual arrays made of byte
// segments), output tensors composed of strided views of sources, and the container of each file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace pyconv {

// Bytes [offset, offset + nbytes) of input file `file`.
struct Segment {
  uint32_t file = 0;
  uint64_t offset = 0;
  uint64_t nbytes = 0;
};

// Dequantization by a scale tensor, as pre-quantized checkpoints store weights (FP8 with block or
// channel scales, int8): the source, seen as an array of `shape`, holds codes whose value is
// code * scale[i[0] / block[0], ..., i[n-1] / block[n-1]], the scale source being the row-major
// array of ceil(shape[d] / block[d]) elements along each dim. The product is taken in f32.
struct Scale {
  int64_t source = -1;  // the scale source (a float type); -1: the source holds plain values
  std::vector<int64_t> shape;
  std::vector<int64_t> block;
};

// A low-rank update merged into a source as it is read, as LoRA adapters are merged: the source,
// seen as [rows, cols], holds W + factor * (B @ A), B [rows, rank] and A [rank, cols] being small
// float sources. The product is taken in f32, then scaled and added.
struct LowRank {
  int64_t a = -1;
  int64_t b = -1;
  int64_t rows = 0, cols = 0, rank = 0;
  float factor = 1.0f;
};

// A virtual row-major array of `dtype`: its segments concatenated in order. A ZeRO parameter is a
// source whose segments live in several rank files.
struct Source {
  DType dtype = DType::F32;
  std::vector<Segment> segments;
  Scale scale;
  std::vector<LowRank> updates;  // added in order, after the scale
};

// Reads the elements of a u8 source as bit fields: (((x >> shift) & (2^bits - 1)) + offset) * scale.
// Low-bit codes packed several to a byte outside any block type are such fields: transformers'
// BitNet checkpoints hold the 2-bit codes (w + 1) of four output rows in one byte. Each field of a
// byte is its own part. bits == 0: the source's elements as they are.
struct BitField {
  uint32_t bits = 0;
  uint32_t shift = 0;
  float offset = 0.0f;
  float scale = 1.0f;
};

// Copies the box [dst_start, dst_start + shape) of the tensor's layout from the source elements at
// src_offset + sum(i[d] * src_strides[d]).
struct Part {
  uint32_t source = 0;
  int64_t src_offset = 0;
  std::vector<int64_t> src_strides;
  std::vector<int64_t> dst_start;
  std::vector<int64_t> shape;
  BitField field;
};

enum class OpKind : uint32_t {
  AddScalar = 0,         // x + value (gemma-style norms stored as w - 1)
  TernarizeAbsmean = 1,  // BitNet absmean: s = 1 / max(mean|W|, 1e-5); W' = clamp(round(W s), -1, 1) / s
};

struct Op {
  OpKind kind = OpKind::AddScalar;
  double value = 0.0;
  // TernarizeAbsmean: leave a tensor that already has one non-zero magnitude as it is.
  bool keep_if_ternary = true;
  // TernarizeAbsmean: round W' to this float type, as the model's forward pass does (f32: none).
  DType round_to = DType::F32;
};

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;   // as stored (row-major; GGUF writes it reversed as ne)
  std::vector<int64_t> layout;  // same elements as shape, the coordinates parts are placed in
  DType out = DType::F32;
  uint32_t file = 0;
  std::vector<Part> parts;      // uncovered elements are zero
  std::vector<Op> ops;
  uint64_t offset = 0;          // absolute byte offset in its file (given for raw files)
  uint64_t nbytes = 0;          // filled by layout()
  // Importance of each column for a quantized `out` (rows of an imatrix): empty, or one row of
  // shape[-1] values per matrix (per expert of a 3-d stack, the leading dims' product).
  std::vector<float> importance;
};

// Safetensors and GGUF files are laid out by the engine. A Raw file is laid out by the caller:
// tensor offsets, byte blobs (headers, directories) and the size are given in the plan.
enum class Container : uint32_t { Raw = 0, Safetensors = 1, Gguf = 2 };

enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
  U64 = 10, I64 = 11, F64 = 12,
};

struct GgufValue {
  GgufType type = GgufType::U32;
  int64_t i = 0;        // integer and bool types
  uint64_t u = 0;       // U64
  double f = 0.0;       // F32 / F64
  std::string s;        // STRING
  GgufType elem = GgufType::U32;       // ARRAY element type
  std::vector<std::string> strings;    // ARRAY of STRING
  std::string raw;                     // ARRAY of numbers: little-endian packed elements
  uint64_t count = 0;                  // ARRAY length
};

struct GgufKV {
  std::string key;
  GgufValue value;
};

struct OutputFileSpec {
  std::string path;
  Container container = Container::Raw;
  // safetensors: __metadata__ string pairs
  std::vector<std::pair<std::string, std::string>> metadata;
  // gguf
  std::vector<GgufKV> kvs;
  uint32_t alignment = 32;
  // raw: bytes written verbatim at given offsets; the other containers put their header here
  std::vector<std::pair<uint64_t, std::string>> blobs;
  uint64_t size = 0;  // raw: given; the other containers: filled by layout()
};

struct Plan {
  std::vector<std::string> inputs;
  std::vector<Source> sources;
  std::vector<Tensor> tensors;
  std::vector<OutputFileSpec> files;
};

uint64_t numel(const std::vector<int64_t>& shape);

}  // namespace pyconv
