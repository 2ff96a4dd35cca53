// Layout: every plan rule is checked before a byte moves, and headers are laid out as the formats say.
#include <doctest/doctest.h>

#include <cstring>
#include <string>

#include "core/error.h"
#include "engine/layout.h"
#include "helpers.h"

using namespace pyconv;
using namespace pyconv::testing;

namespace {

// One f32 input of `elems` elements and one safetensors output file.
Plan one_source_plan(uint64_t elems) {
  Plan p;
  p.inputs = {"/nonexistent/input"};  // layout never opens inputs
  p.sources.push_back(one_segment(DType::F32, 0, 0, elems * 4));
  OutputFileSpec f;
  f.path = "/nonexistent/out.safetensors";
  f.container = Container::Safetensors;
  p.files.push_back(f);
  return p;
}

std::string layout_error(Plan p) {
  try {
    layout(p);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("safetensors: header JSON with data offsets, padded so data starts 8-byte aligned") {
  Plan p = one_source_plan(12);
  p.files[0].metadata = {{"format", "pt"}};
  p.tensors.push_back(tensor("a", {3, 4}, DType::F16, {whole(0, {3, 4})}));
  p.tensors.push_back(tensor("b\"q", {2}, DType::F32, {}));
  layout(p);
  const std::string& h = p.files[0].blobs.at(0).second;
  uint64_t json_len = 0;
  std::memcpy(&json_len, h.data(), 8);
  CHECK(json_len % 8 == 0);
  CHECK(h.size() == 8 + json_len);
  const std::string json = h.substr(8);
  CHECK(json.rfind("{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F16\",\"shape\":[3,4],\"data_offsets\":[0,24]},"
                   "\"b\\\"q\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}}", 0) == 0);
  CHECK(p.tensors[0].offset == h.size());
  CHECK(p.tensors[1].offset == h.size() + 24);
  CHECK(p.files[0].size == h.size() + 32);
}

TEST_CASE("gguf: tensor data aligned, dims written innermost first") {
  Plan p = one_source_plan(64 * 3);
  p.files[0].container = Container::Gguf;
  p.files[0].alignment = 64;
  GgufValue v;
  v.type = GgufType::STRING;
  v.s = "llama";
  p.files[0].kvs.push_back({"general.architecture", v});
  p.tensors.push_back(tensor("w", {3, 64}, DType::Q8_0, {whole(0, {3, 64})}));
  p.tensors.push_back(tensor("n", {5}, DType::F32, {}));
  layout(p);
  const std::string& h = p.files[0].blobs.at(0).second;
  CHECK(h.compare(0, 4, "GGUF") == 0);
  CHECK(h.size() % 64 == 0);
  CHECK(p.tensors[0].offset == h.size());
  CHECK(p.tensors[0].nbytes == 3 * 2 * 34);
  CHECK(p.tensors[1].offset == h.size() + 256);  // 204 bytes rounded up to the alignment
  const size_t at = h.find("w");
  REQUIRE(at != std::string::npos);
  uint32_t ndim = 0;
  uint64_t ne0 = 0, ne1 = 0;
  std::memcpy(&ndim, h.data() + at + 1, 4);
  std::memcpy(&ne0, h.data() + at + 5, 8);
  std::memcpy(&ne1, h.data() + at + 13, 8);
  CHECK(ndim == 2);
  CHECK(ne0 == 64);
  CHECK(ne1 == 3);
}

TEST_CASE("invalid plans are refused with the tensor named") {
  SUBCASE("a part reaching past the tensor") {
    Plan p = one_source_plan(100);
    Part part = whole(0, {10, 10});
    part.dst_start = {5, 0};
    p.tensors.push_back(tensor("far", {10, 10}, DType::F32, {part}));
    CHECK(layout_error(p).find("reaches past the tensor") != std::string::npos);
  }
  SUBCASE("overlapping parts") {
    Plan p = one_source_plan(100);
    Part b = whole(0, {5, 10});
    b.dst_start = {4, 0};
    p.tensors.push_back(tensor("ovl", {10, 10}, DType::F32, {whole(0, {5, 10}), b}));
    CHECK(layout_error(p).find("overlap") != std::string::npos);
  }
  SUBCASE("a part reading past its source") {
    Plan p = one_source_plan(100);
    Part part = whole(0, {10, 10});
    part.src_offset = 1;
    p.tensors.push_back(tensor("src", {10, 10}, DType::F32, {part}));
    CHECK(layout_error(p).find("reads element 100 of a source with 100") != std::string::npos);
  }
  SUBCASE("rows that do not fit the blocks") {
    Plan p = one_source_plan(100);
    p.tensors.push_back(tensor("q", {10, 10}, DType::Q8_0, {whole(0, {10, 10})}));
    CHECK(layout_error(p).find("do not fit q8_0 blocks") != std::string::npos);
  }
  SUBCASE("integers turned into floats") {
    Plan p = one_source_plan(0);
    p.sources[0] = one_segment(DType::I32, 0, 0, 400);
    p.tensors.push_back(tensor("i", {100}, DType::F16, {whole(0, {100})}));
    CHECK(layout_error(p).find("can only be copied as it is") != std::string::npos);
  }
}

TEST_CASE("a part whose reach overflows 64 bits is refused, not wrapped around") {
  SUBCASE("a source stride whose extent wraps to zero") {
    Plan p = one_source_plan(10);
    Part part = whole(0, {5, 10});
    part.src_strides = {int64_t{1} << 62, 1};  // 4 * 2^62 = 2^64: a wrapping sum would read element 9
    p.tensors.push_back(tensor("huge", {5, 10}, DType::F32, {part}));
    CHECK(layout_error(p).find("reads past its source") != std::string::npos);
  }
  SUBCASE("a source offset that wraps with the extent") {
    Plan p = one_source_plan(10);
    Part part = whole(0, {2, 5});
    part.src_offset = INT64_MAX;
    part.src_strides = {INT64_MAX, 1};
    p.tensors.push_back(tensor("huge", {2, 5}, DType::F32, {part}));
    CHECK(layout_error(p).find("reads past its source") != std::string::npos);
  }
  SUBCASE("a destination start at the end of int64") {
    Plan p = one_source_plan(10);
    Part part = whole(0, {1, 10});
    part.dst_start = {INT64_MAX - 1, 0};
    part.shape = {4, 10};
    part.src_strides = {0, 1};
    p.tensors.push_back(tensor("huge", {2, 10}, DType::F32, {part}));
    CHECK(layout_error(p).find("reaches past the tensor") != std::string::npos);
  }
  SUBCASE("a raw file offset that wraps with the tensor's size") {
    Plan p = one_source_plan(10);
    p.tensors.push_back(tensor("huge", {10}, DType::F32, {whole(0, {10})}));
    p.tensors[0].offset = UINT64_MAX - 8;
    p.files[0].container = Container::Raw;
    p.files[0].size = 100;
    CHECK(layout_error(p).find("ends past the file size") != std::string::npos);
  }
}

TEST_CASE("plans that could only fail while running are refused up front (found by the plan fuzzer)") {
  SUBCASE("an integer tensor made from floats") {
    Plan p = one_source_plan(8);
    p.tensors.push_back(tensor("i", {8}, DType::I32, {whole(0, {8})}));
    CHECK(layout_error(p).find("a i32 tensor is copied from i32 data only") != std::string::npos);
  }
  SUBCASE("an integer tensor with an operation") {
    Plan p = one_source_plan(8);
    p.tensors.push_back(tensor("i", {8}, DType::I32, {}));
    p.tensors[0].ops.push_back(Op{OpKind::AddScalar, 1.0, true, DType::F32});
    CHECK(layout_error(p).find("a i32 tensor takes no operations") != std::string::npos);
  }
  SUBCASE("a source no tensor reads, with a segment that is not whole blocks") {
    Plan p = one_source_plan(8);
    p.sources.push_back(one_segment(DType::Q8_0, 0, 0, 35));
    CHECK(layout_error(p).find("not a whole number of q8_0 blocks") != std::string::npos);
  }
  SUBCASE("an I2_S source cut inside a 128-element block") {
    Plan p = one_source_plan(8);
    Source s;
    s.dtype = DType::I2_S;
    s.segments = {{0, 0, 16}, {0, 16, 48}};  // 64 + 192 elements, then the 32-byte tail
    p.sources.push_back(s);
    CHECK(layout_error(p).find("not a whole number of i2_s blocks") != std::string::npos);
  }
  SUBCASE("a block source placed off its blocks along the last dim") {
    Plan p = one_source_plan(8);
    p.sources.push_back(one_segment(DType::Q8_0, 0, 0, 34));
    Part off = whole(1, {32});
    off.dst_start = {16};
    p.tensors.push_back(tensor("w", {64}, DType::F32, {off}));
    CHECK(layout_error(p).find("can only be read in whole contiguous blocks") != std::string::npos);
  }
}
