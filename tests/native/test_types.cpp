// The type table: one row per element or block type, found by id in constant time, and open to
// types registered from outside the library (a toy block type here, converted through whole plans).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "engine/executor.h"
#include "engine/layout.h"
#include "helpers.h"

using namespace pyconv;
using namespace pyconv::testing;

namespace {

// Nanoseconds for `rounds` lookups of `id`, the fastest of several tries (the machine is shared).
double lookup_ns(DType id, int rounds) {
  volatile uint32_t source = static_cast<uint32_t>(id);  // keeps the compiler from hoisting the lookup
  volatile uint32_t sink = 0;
  double best = 1e300;
  for (int attempt = 0; attempt < 9; ++attempt) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < rounds; ++i) sink = sink + traits(static_cast<DType>(source)).block_bytes;
    const std::chrono::duration<double, std::nano> took = std::chrono::steady_clock::now() - start;
    best = std::min(best, took.count());
  }
  return best;
}

// A toy block type: blocks of 8 int8 codes, rows of 16 elements, 2-d tensors, and one f32 scale per
// tensor (its largest |x| / 127) in a 4-byte tail: per-tensor state the way I2_S has it.
constexpr DType kToy = static_cast<DType>(200);

void toy_quantize(const float* x, uint8_t* y, size_t rows, size_t per_row, const QuantParams& p) {
  const float inv = p.tensor_scale > 0.0f ? 1.0f / p.tensor_scale : 0.0f;
  for (size_t i = 0; i < rows * per_row; ++i) {
    const auto code = static_cast<int8_t>(std::max(-127.0f, std::min(127.0f, std::round(x[i] * inv))));
    std::memcpy(y + i, &code, 1);
  }
}
void toy_dequantize(const uint8_t* x, float* y, size_t n, const QuantParams& p) {
  for (size_t i = 0; i < n; ++i) y[i] = static_cast<float>(static_cast<int8_t>(x[i])) * p.tensor_scale;
}
QuantParams toy_params(float max_abs) {
  QuantParams p;
  p.tensor_scale = max_abs / 127.0f;
  return p;
}
void toy_write_tail(const QuantParams& p, uint8_t* tail) { std::memcpy(tail, &p.tensor_scale, 4); }
QuantParams toy_read_tail(const uint8_t* tail) {
  QuantParams p;
  std::memcpy(&p.tensor_scale, tail, 4);
  return p;
}

DTypeTraits toy_row() {
  DTypeTraits r;
  r.id = kToy;
  r.name = "toy_i8";
  r.kind = TypeKind::Block;
  r.block_elems = 8;
  r.block_bytes = 8;
  r.row_elems = 16;
  r.tail_bytes = 4;
  r.dims = 2;
  r.quantize = toy_quantize;
  r.dequantize = toy_dequantize;
  r.tensor_params = toy_params;
  r.write_tail = toy_write_tail;
  r.read_tail = toy_read_tail;
  return r;
}

void register_toy_once() {
  static const bool done = [] {
    register_type(toy_row());
    return true;
  }();
  (void)done;
}

}  // namespace

TEST_CASE("every row sits at its id, and names find their rows") {
  for (const DTypeTraits* row : all_types()) {
    CHECK(&traits(row->id) == row);
    CHECK(dtype_from_name(row->name) == row->id);
    CHECK(row->row_elems % row->block_elems == 0);
  }
  CHECK_THROWS_WITH_AS(traits(static_cast<DType>(199)), "unknown dtype id 199", Error);
  CHECK_THROWS_WITH_AS(traits(static_cast<DType>(100000)), "unknown dtype id 100000", Error);
  CHECK_THROWS_AS(dtype_from_name("q9_9"), Error);
}

TEST_CASE("looking a type up costs the same for every row: the strided path does it per element") {
  // Rows are an array indexed by id; a scan of the rows in their built-in order would take about
  // 40 steps for the last ones and one for F32.
  const int rounds = 200000;
  const double first = lookup_ns(DType::F32, rounds);
  for (DType late : {DType::Q1_0, DType::NVFP4, DType::F8_E5M2}) {
    const double last = lookup_ns(late, rounds);
    CHECK_MESSAGE(last < 4 * first + 2.0 * rounds, "first row " << first / rounds << " ns, id "
                                                             << static_cast<uint32_t>(late) << ": " << last / rounds << " ns");
  }
}

TEST_CASE("a row registered from outside is refused when it clashes or contradicts itself") {
  register_toy_once();
  CHECK(traits(kToy).name == std::string("toy_i8"));
  CHECK(dtype_from_name("toy_i8") == kToy);
  CHECK_THROWS_WITH_AS(register_type(toy_row()), doctest::Contains("the id is taken by toy_i8"), Error);
  DTypeTraits renamed = toy_row();
  renamed.id = static_cast<DType>(201);
  renamed.name = "q8_0";
  CHECK_THROWS_WITH_AS(register_type(renamed), doctest::Contains("the name is taken"), Error);
  DTypeTraits no_tail_reader = toy_row();
  no_tail_reader.id = static_cast<DType>(202);
  no_tail_reader.name = "toy_broken";
  no_tail_reader.read_tail = nullptr;
  CHECK_THROWS_WITH_AS(register_type(no_tail_reader), doctest::Contains("a tail needs write_tail and read_tail"), Error);
  DTypeTraits too_big = toy_row();
  too_big.id = static_cast<DType>(kMaxTypeIds);
  CHECK_THROWS_AS(register_type(too_big), Error);
  DTypeTraits lost_fallback = toy_row();
  lost_fallback.id = static_cast<DType>(203);
  lost_fallback.name = "toy_lost";
  lost_fallback.fallback = 250;
  CHECK_THROWS_WITH_AS(register_type(lost_fallback), doctest::Contains("its fallback type id 250 has no row"), Error);
}

TEST_CASE("a registered block type converts through whole plans: quantized with its tail, read back as a source") {
  register_toy_once();
  ScratchDir dir;
  const int64_t rows = 6, cols = 32;
  const size_t n = static_cast<size_t>(rows * cols);
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(static_cast<int>(i * 37 % 101) - 50) / 8.0f;
  write_file(dir.file("in.bin"), x);

  // f32 -> toy, with a transposed copy as well: rows of the layout are what the type's rules see
  Plan p;
  p.inputs = {dir.file("in.bin")};
  p.sources.push_back(one_segment(DType::F32, 0, 0, n * 4));
  Part tr;
  tr.source = 0;
  tr.src_strides = {1, cols};
  tr.dst_start = {0, 0};
  tr.shape = {cols, rows};
  p.tensors.push_back(tensor("w", {rows, cols}, kToy, {whole(0, {rows, cols})}));
  p.tensors.push_back(tensor("bad_rows", {cols, rows}, kToy, {tr}));
  p.files.push_back(raw_file(dir.file("toy.raw"), p.tensors));
  {
    Plan invalid = p;
    CHECK_THROWS_WITH_AS(layout(invalid), doctest::Contains("rows of 6 elements do not fit toy_i8 blocks"), Error);
  }
  p.tensors.pop_back();
  p.files = {raw_file(dir.file("toy.raw"), p.tensors)};
  CHECK(p.files[0].size == n + 4);
  for (int threads : {1, 2}) {
    remove_file(dir.file("toy.raw"));
    Plan run = p;
    const std::vector<TensorReport> reports = execute(run, ExecOptions{threads, 64}, nullptr);
    REQUIRE(reports.size() == 1);  // the statistics pass ran for it
    CHECK(reports[0].scale == 50.0f / 8.0f);
  }
  const std::vector<uint8_t> toy = read_file(dir.file("toy.raw"));
  REQUIRE(toy.size() == n + 4);
  float scale = 0.0f;
  std::memcpy(&scale, toy.data() + n, 4);
  CHECK(scale == (50.0f / 8.0f) / 127.0f);
  for (size_t i = 0; i < n; ++i)
    REQUIRE(static_cast<int8_t>(toy[i]) == static_cast<int8_t>(std::round(x[i] / scale)));

  // toy -> f32 (decoded with the scale from its tail) and toy -> toy (made afresh, same bytes)
  Plan back;
  back.inputs = {dir.file("toy.raw")};
  back.sources.push_back(one_segment(kToy, 0, 0, n + 4));
  back.tensors.push_back(tensor("f", {rows, cols}, DType::F32, {whole(0, {rows, cols})}));
  back.tensors.push_back(tensor("again", {rows, cols}, kToy, {whole(0, {rows, cols})}));
  back.files.push_back(raw_file(dir.file("back.raw"), back.tensors));
  execute(back, ExecOptions{2, 64}, nullptr);
  const std::vector<uint8_t> out = read_file(dir.file("back.raw"));
  const std::vector<float> decoded = as<float>(out);
  for (size_t i = 0; i < n; ++i) REQUIRE(decoded[i] == static_cast<float>(static_cast<int8_t>(toy[i])) * scale);
  CHECK(std::vector<uint8_t>(out.begin() + static_cast<long>(back.tensors[1].offset), out.end()) == toy);

  // a 3-d tensor breaks the type's rule of two dims
  Plan three_d = p;
  three_d.tensors[0].shape = three_d.tensors[0].layout = {2, 3, 32};
  three_d.tensors[0].parts[0] = whole(0, {2, 3, 32});
  CHECK_THROWS_WITH_AS(layout(three_d), doctest::Contains("toy_i8 needs a 2-d tensor"), Error);
}
