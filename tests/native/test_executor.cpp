// The executor: plans run on real files, bytes checked against index arithmetic and the kernels.
#include <doctest/doctest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "engine/executor.h"
#include "helpers.h"
#include "kernels/cast.h"
#include "kernels/quant.h"

using namespace pyconv;
using namespace pyconv::testing;

namespace {

std::vector<float> iota_floats(size_t n, float start = 0.0f) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

}  // namespace

TEST_CASE("a transposed, re-typed and concatenated tensor lands where index arithmetic says") {
  ScratchDir dir;
  const int64_t rows = 33, cols = 70;
  const std::vector<float> a = iota_floats(static_cast<size_t>(rows * cols));
  std::vector<uint8_t> file(16, 0xab);
  file.insert(file.end(), reinterpret_cast<const uint8_t*>(a.data()), reinterpret_cast<const uint8_t*>(a.data() + a.size()));
  write_file(dir.file("in.bin"), file);

  Plan p;
  p.inputs = {dir.file("in.bin")};
  p.sources.push_back(one_segment(DType::F32, 0, 16, a.size() * 4));
  Part t;  // the transpose: layout [cols, rows], source strides swapped
  t.source = 0;
  t.src_strides = {1, cols};
  t.dst_start = {0, 0};
  t.shape = {cols, rows};
  Part first = whole(0, {rows, cols}), second = whole(0, {rows, cols});
  second.dst_start = {rows, 0};
  p.tensors.push_back(tensor("t", {cols, rows}, DType::F16, {t}));
  p.tensors.push_back(tensor("cat", {2 * rows, cols}, DType::F32, {first, second}));
  p.tensors.push_back(tensor("pad", {rows + 2, cols}, DType::BF16, {whole(0, {rows, cols})}));
  p.files.push_back(raw_file(dir.file("out.raw"), p.tensors));

  for (uint64_t chunk : {uint64_t{256}, uint64_t{4096}, uint64_t{4} << 20}) {
    remove_file(dir.file("out.raw"));
    Plan run = p;
    execute(run, ExecOptions{2, chunk}, nullptr);
    const std::vector<uint8_t> out = read_file(dir.file("out.raw"));
    REQUIRE(out.size() == run.files[0].size);
    const std::vector<uint16_t> tr = as<uint16_t>(out);
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t r = 0; r < rows; ++r)
        REQUIRE(tr[static_cast<size_t>(c * rows + r)] == f32_to_f16(a[static_cast<size_t>(r * cols + c)]));
    const std::vector<float> cat = as<float>(out, run.tensors[1].offset);
    for (size_t i = 0; i < a.size(); ++i) REQUIRE((cat[i] == a[i] && cat[i + a.size()] == a[i]));
    const std::vector<uint16_t> pad = as<uint16_t>(out, run.tensors[2].offset);
    for (size_t i = 0; i < a.size(); ++i) REQUIRE(pad[i] == f32_to_bf16(a[i]));
    for (size_t i = a.size(); i < a.size() + 2 * cols; ++i) REQUIRE(pad[i] == 0);
  }
}

TEST_CASE("a source spread over several files, cut mid-row, reads as one array") {
  ScratchDir dir;
  const std::vector<float> a = iota_floats(40 * 64, 0.25f);
  const uint64_t cuts[] = {0, 4 * 64 * 7 + 12, 4 * 64 * 30, a.size() * 4};
  Plan p;
  Source s;
  s.dtype = DType::F32;
  for (uint32_t i = 0; i < 3; ++i) {
    const std::string path = dir.file("seg" + std::to_string(i));
    std::vector<uint8_t> bytes(5, 0xcd);
    const uint8_t* base = reinterpret_cast<const uint8_t*>(a.data());
    bytes.insert(bytes.end(), base + cuts[i], base + cuts[i + 1]);
    write_file(path, bytes);
    p.inputs.push_back(path);
    s.segments.push_back({i, 5, cuts[i + 1] - cuts[i]});
  }
  p.sources.push_back(s);
  Part tr;
  tr.source = 0;
  tr.src_strides = {1, 64};
  tr.dst_start = {0, 0};
  tr.shape = {64, 40};
  p.tensors.push_back(tensor("same", {40, 64}, DType::F32, {whole(0, {40, 64})}));
  p.tensors.push_back(tensor("tr", {64, 40}, DType::F32, {tr}));
  p.files.push_back(raw_file(dir.file("out.raw"), p.tensors));
  execute(p, ExecOptions{3, 1024}, nullptr);
  const std::vector<float> out = as<float>(read_file(dir.file("out.raw")));
  for (size_t i = 0; i < a.size(); ++i) REQUIRE(out[i] == a[i]);
  for (size_t c = 0; c < 64; ++c)
    for (size_t r = 0; r < 40; ++r) REQUIRE(out[a.size() + c * 40 + r] == a[r * 64 + c]);
}

TEST_CASE("quantized outputs equal the kernel's bytes whatever the threads and chunks") {
  ScratchDir dir;
  std::vector<float> a(48 * 256);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>((i * 2654435761u) % 1000) / 37.0f - 13.0f;
  write_file(dir.file("in.bin"), a);
  std::vector<uint8_t> want(48 * 256 / 32 * 34);
  quantize(DType::Q8_0, a.data(), want.data(), 48, 256, QuantParams{});
  Plan p;
  p.inputs = {dir.file("in.bin")};
  p.sources.push_back(one_segment(DType::F32, 0, 0, a.size() * 4));
  p.tensors.push_back(tensor("q", {48, 256}, DType::Q8_0, {whole(0, {48, 256})}));
  p.files.push_back(raw_file(dir.file("out.raw"), p.tensors));
  for (int threads : {1, 2, 3})
    for (uint64_t chunk : {uint64_t{512}, uint64_t{65536}}) {
      remove_file(dir.file("out.raw"));
      Plan run = p;
      execute(run, ExecOptions{threads, chunk}, nullptr);
      REQUIRE(read_file(dir.file("out.raw")) == want);
    }
}

TEST_CASE("a failed run leaves no output file and names the input") {
  ScratchDir dir;
  write_file(dir.file("short.bin"), std::vector<float>(10));
  Plan p;
  p.inputs = {dir.file("short.bin")};
  p.sources.push_back(one_segment(DType::F32, 0, 0, 400));  // the file holds 40 bytes
  p.tensors.push_back(tensor("w", {100}, DType::F16, {whole(0, {100})}));
  p.files.push_back(raw_file(dir.file("out.raw"), p.tensors));
  CHECK_THROWS_WITH_AS(execute(p, ExecOptions{}, nullptr), doctest::Contains("outside the file"), Error);
  CHECK_FALSE(file_exists(dir.file("out.raw")));
}

TEST_CASE("sources at odd offsets of their files are read element by element without aligned loads") {
  // Checkpoint headers have any length, so a tensor's data may start at any byte of a map. Run in the
  // sanitizer build, a typed load at such an address is reported (alignment) and fails the test.
  ScratchDir dir;
  const int64_t rows = 9, cols = 40;
  const size_t n = static_cast<size_t>(rows * cols);
  std::vector<float> f32(n);
  std::vector<double> f64(n);
  std::vector<uint16_t> f16(n);
  for (size_t i = 0; i < n; ++i) {
    f32[i] = static_cast<float>(i) * 0.5f - 7.0f;
    f64[i] = f32[i];
    f16[i] = f32_to_f16(f32[i]);
  }
  std::vector<uint8_t> file(13, 0xab);
  const auto append = [&](const void* p, size_t bytes) {
    const auto* b = static_cast<const uint8_t*>(p);
    const uint64_t at = file.size();
    file.insert(file.end(), b, b + bytes);
    file.push_back(0xcd);  // keeps the next array at an odd offset too
    return at;
  };
  const uint64_t at32 = append(f32.data(), n * 4), at64 = append(f64.data(), n * 8), at16 = append(f16.data(), n * 2);
  write_file(dir.file("in.bin"), file);

  Plan p;
  p.inputs = {dir.file("in.bin")};
  p.sources = {one_segment(DType::F32, 0, at32, n * 4), one_segment(DType::F64, 0, at64, n * 8),
               one_segment(DType::F16, 0, at16, n * 2)};
  const auto transposed = [&](uint32_t source) {
    Part t;
    t.source = source;
    t.src_strides = {1, cols};
    t.dst_start = {0, 0};
    t.shape = {cols, rows};
    return t;
  };
  const DType outs[] = {DType::F32, DType::F16, DType::BF16};
  for (uint32_t s = 0; s < 3; ++s)
    for (DType out : outs) {
      p.tensors.push_back(tensor("t", {cols, rows}, out, {transposed(s)}));
      p.tensors.push_back(tensor("same", {rows, cols}, out, {whole(s, {rows, cols})}));
    }
  p.files.push_back(raw_file(dir.file("out.raw"), p.tensors));
  for (bool simd : {false, true}) {
    set_simd_enabled(simd);
    remove_file(dir.file("out.raw"));
    Plan run = p;
    execute(run, ExecOptions{1, 4096}, nullptr);
    const std::vector<uint8_t> out = read_file(dir.file("out.raw"));
    size_t k = 0;
    for (uint32_t s = 0; s < 3; ++s)
      for (DType type : outs)
        for (bool tr : {true, false}) {
          const Tensor& t = run.tensors[k++];
          for (size_t i = 0; i < n; ++i) {
            const size_t src = tr ? (i % rows) * cols + i / rows : i;
            if (type == DType::F32) REQUIRE(as<float>(out, t.offset)[i] == f32[src]);
            else if (type == DType::F16) REQUIRE(as<uint16_t>(out, t.offset)[i] == f16[src]);
            else REQUIRE(as<uint16_t>(out, t.offset)[i] == f32_to_bf16(f32[src]));
          }
        }
  }
  set_simd_enabled(true);
}

TEST_CASE("a contiguous source run across segments lands in a strided destination (found by the plan fuzzer)") {
  // Column 0 of a [40, 2] tensor read from a source cut into two files at element 17: after the box
  // is simplified the copy is one run of 40 source elements written 2 apart, which must not be
  // written as one contiguous block.
  ScratchDir dir;
  const std::vector<float> a = iota_floats(40, 1.0f);
  write_file(dir.file("s0"), a.data(), 17 * 4);
  write_file(dir.file("s1"), a.data() + 17, 23 * 4);
  Plan p;
  p.inputs = {dir.file("s0"), dir.file("s1")};
  Source s;
  s.dtype = DType::F32;
  s.segments = {{0, 0, 17 * 4}, {1, 0, 23 * 4}};
  p.sources.push_back(s);
  Part column;
  column.source = 0;
  column.src_strides = {1, 1};
  column.dst_start = {0, 0};
  column.shape = {40, 1};
  p.tensors.push_back(tensor("w", {40, 2}, DType::F32, {column}));
  p.files.push_back(raw_file(dir.file("out.raw"), p.tensors));
  execute(p, ExecOptions{1, 4 << 20}, nullptr);
  const std::vector<float> out = as<float>(read_file(dir.file("out.raw")));
  for (size_t i = 0; i < 40; ++i) {
    REQUIRE(out[2 * i] == a[i]);
    REQUIRE(out[2 * i + 1] == 0.0f);
  }
}

TEST_CASE("chunks start on whole blocks of every block source, not only of the output (found by the plan fuzzer)") {
  // An f32 tensor whose second half is decoded from q8_0: cut into 16-element chunks for the f32
  // output alone, the q8_0 part would be decoded 16 elements at a time, half a block.
  ScratchDir dir;
  std::vector<float> a = iota_floats(64, -20.0f);
  std::vector<uint8_t> q(2 * 34);
  quantize(DType::Q8_0, a.data(), q.data(), 1, 64, QuantParams{});
  std::vector<float> decoded(64);
  dequantize(DType::Q8_0, q.data(), decoded.data(), 64, QuantParams{});
  write_file(dir.file("f.bin"), a);
  write_file(dir.file("q.bin"), q);
  Plan p;
  p.inputs = {dir.file("f.bin"), dir.file("q.bin")};
  p.sources = {one_segment(DType::F32, 0, 0, 64 * 4), one_segment(DType::Q8_0, 1, 0, 2 * 34)};
  Part second = whole(1, {64});
  second.dst_start = {64};
  p.tensors.push_back(tensor("w", {128}, DType::F32, {whole(0, {64}), second}));
  p.files.push_back(raw_file(dir.file("out.raw"), p.tensors));
  execute(p, ExecOptions{1, 64}, nullptr);
  const std::vector<float> out = as<float>(read_file(dir.file("out.raw")));
  for (size_t i = 0; i < 64; ++i) REQUIRE((out[i] == a[i] && out[64 + i] == decoded[i]));
}

TEST_CASE("a scaled source reads as codes times the scale of their block, through any view") {
  ScratchDir dir;
  const int64_t rows = 7, cols = 70;  // blocks of 3 x 32: partial ones on both edges
  std::vector<int8_t> codes(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<int8_t>(static_cast<int>(i * 37 % 255) - 127);
  const int64_t grid_rows = 3, grid_cols = 3;
  std::vector<float> scales(static_cast<size_t>(grid_rows * grid_cols));
  for (size_t i = 0; i < scales.size(); ++i) scales[i] = 0.01f * static_cast<float>(i + 1);
  write_file(dir.file("codes.bin"), codes);
  write_file(dir.file("scales.bin"), scales);
  Plan p;
  p.inputs = {dir.file("codes.bin"), dir.file("scales.bin")};
  p.sources.push_back(one_segment(DType::I8, 0, 0, codes.size()));
  p.sources.push_back(one_segment(DType::F32, 1, 0, scales.size() * 4));
  p.sources[0].scale = Scale{1, {rows, cols}, {3, 32}};
  Part tr;  // transposed: one element at a time
  tr.source = 0;
  tr.src_strides = {1, cols};
  tr.dst_start = {0, 0};
  tr.shape = {cols, rows};
  p.tensors.push_back(tensor("w", {rows, cols}, DType::F32, {whole(0, {rows, cols})}));
  p.tensors.push_back(tensor("t", {cols, rows}, DType::F32, {tr}));
  p.files.push_back(raw_file(dir.file("out.raw"), p.tensors));
  execute(p, ExecOptions{2, 256}, nullptr);
  const std::vector<float> out = as<float>(read_file(dir.file("out.raw")));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const float want = static_cast<float>(codes[static_cast<size_t>(r * cols + c)]) *
                         scales[static_cast<size_t>(r / 3 * grid_cols + c / 32)];
      REQUIRE(out[static_cast<size_t>(r * cols + c)] == want);
      REQUIRE(out[static_cast<size_t>(rows * cols + c * rows + r)] == want);
    }

  Plan bad = p;  // a scale that does not tile the codes
  bad.sources[0].scale.block = {2, 32};
  CHECK_THROWS_WITH_AS(execute(bad, ExecOptions{1, 256}, nullptr), doctest::Contains("its blocks need"), Error);
}

TEST_CASE("a low-rank update is added to its source as it is read, through any view, and checked by layout()") {
  ScratchDir dir;
  const int64_t rows = 37, cols = 70, rank = 3;
  std::vector<uint16_t> w(static_cast<size_t>(rows * cols));
  std::vector<float> a(static_cast<size_t>(rank * cols));
  std::vector<uint16_t> b(static_cast<size_t>(rows * rank));
  for (size_t i = 0; i < w.size(); ++i) w[i] = f32_to_bf16(static_cast<float>(i % 97) * 0.25f - 12.0f);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 13) * 0.125f - 0.75f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = f32_to_f16(static_cast<float>(i % 7) * 0.5f - 1.5f);
  std::vector<uint8_t> file(reinterpret_cast<const uint8_t*>(w.data()), reinterpret_cast<const uint8_t*>(w.data() + w.size()));
  file.insert(file.end(), reinterpret_cast<const uint8_t*>(a.data()), reinterpret_cast<const uint8_t*>(a.data() + a.size()));
  file.insert(file.end(), reinterpret_cast<const uint8_t*>(b.data()), reinterpret_cast<const uint8_t*>(b.data() + b.size()));
  write_file(dir.file("in.bin"), file);
  const float factor = 0.625f;
  // W + factor * (B @ A), the product summed over the rank in order, in f32
  std::vector<float> want(w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float acc = 0.0f;
      for (int64_t k = 0; k < rank; ++k)
        acc += f16_to_f32(b[static_cast<size_t>(r * rank + k)]) * a[static_cast<size_t>(k * cols + c)];
      want[static_cast<size_t>(r * cols + c)] = bf16_to_f32(w[static_cast<size_t>(r * cols + c)]) + acc * factor;
    }

  Plan p;
  p.inputs = {dir.file("in.bin")};
  const uint64_t wb = w.size() * 2, ab = a.size() * 4;
  p.sources.push_back(one_segment(DType::BF16, 0, 0, wb));
  p.sources.push_back(one_segment(DType::F32, 0, wb, ab));
  p.sources.push_back(one_segment(DType::F16, 0, wb + ab, b.size() * 2));
  p.sources[0].updates.push_back(LowRank{1, 2, rows, cols, rank, factor});
  Part t;  // transposed: layout [cols, rows]
  t.source = 0;
  t.src_strides = {1, cols};
  t.dst_start = {0, 0};
  t.shape = {cols, rows};
  p.tensors.push_back(tensor("same", {rows, cols}, DType::F32, {whole(0, {rows, cols})}));
  p.tensors.push_back(tensor("t", {cols, rows}, DType::F32, {t}));
  p.files.push_back(raw_file(dir.file("out.raw"), p.tensors));
  for (uint64_t chunk : {uint64_t{256}, uint64_t{4} << 20}) {
    remove_file(dir.file("out.raw"));
    Plan run = p;
    execute(run, ExecOptions{2, chunk}, nullptr);
    const std::vector<uint8_t> out = read_file(dir.file("out.raw"));
    const std::vector<float> same = as<float>(out), tr = as<float>(out, run.tensors[1].offset);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        REQUIRE(same[static_cast<size_t>(r * cols + c)] == want[static_cast<size_t>(r * cols + c)]);
        REQUIRE(tr[static_cast<size_t>(c * rows + r)] == want[static_cast<size_t>(r * cols + c)]);
      }
  }

  Plan wrong = p;
  wrong.sources[0].updates[0].rank = 4;  // A and B no longer hold rank * cols and rows * rank elements
  CHECK_THROWS_AS(execute(wrong, ExecOptions{1, 4096}, nullptr), Error);
  Plan codes = p;
  codes.sources[0].dtype = DType::I16;  // integers take no update
  codes.sources[0].segments[0].nbytes = wb;
  CHECK_THROWS_AS(execute(codes, ExecOptions{1, 4096}, nullptr), Error);
}
