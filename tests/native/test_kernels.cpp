// Kernels: casts (SIMD against the scalar reference), strided copies, block quantizers.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cast.h"
#include "kernels/gather.h"
#include "kernels/quant.h"

using namespace pyconv;

namespace {

// Runs `fn` with the SIMD kernels off, then on, and restores the default.
template <typename Fn>
auto scalar_and_simd(Fn fn) {
  set_simd_enabled(false);
  auto scalar = fn();
  set_simd_enabled(true);
  auto simd = fn();
  return std::make_pair(scalar, simd);
}

std::vector<float> every_kind_of_float(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> x(n);
  for (float& v : x) {
    uint32_t bits = rng();
    std::memcpy(&v, &bits, 4);
  }
  const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 65504.0f, 65520.0f, 1e-8f, 5.96e-8f, 1.0f};
  for (size_t i = 0; i < n; i += 7) x[i] = special[i / 7 % 10];
  return x;
}

}  // namespace

TEST_CASE("f32 to f16 and bf16: the SIMD path gives the scalar reference's bits") {
  const std::vector<float> x = every_kind_of_float(4099, 1);
  for (DType to : {DType::F16, DType::BF16}) {
    const auto [scalar, simd] = scalar_and_simd([&] {
      std::vector<uint16_t> out(x.size());
      cast(DType::F32, x.data(), to, out.data(), x.size());
      return out;
    });
    CHECK(scalar == simd);
  }
}

TEST_CASE("f16 rounding follows numpy: ties to even, overflow to Inf, NaN stays NaN") {
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);
  CHECK(f32_to_f16(65519.0f) == 0x7bff);
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // a tie rounds to the even mantissa
  CHECK((f32_to_f16(NAN) & 0x7fff) > 0x7c00);
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
}

TEST_CASE("a float cast to another kind of type is refused") {
  float x = 1.0f;
  int32_t y = 0;
  CHECK_THROWS_WITH(cast(DType::F32, &x, DType::I32, &y, 1), "cannot cast f32 to i32");
}

TEST_CASE("copy_strided transposes and slices like index arithmetic") {
  const int64_t rows = 37, cols = 70;
  std::vector<uint32_t> src(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint32_t>(i);
  std::vector<uint32_t> dst(src.size());
  StridedBox box;
  box.ndim = 2;
  box.shape[0] = cols;
  box.shape[1] = rows;
  box.src_strides[0] = 1;
  box.src_strides[1] = cols;
  box.dst_strides[0] = rows;
  box.dst_strides[1] = 1;
  copy_strided(reinterpret_cast<const uint8_t*>(src.data()), reinterpret_cast<uint8_t*>(dst.data()), box, 4);
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) REQUIRE(dst[static_cast<size_t>(c * rows + r)] == src[static_cast<size_t>(r * cols + c)]);
}

TEST_CASE("simplify merges a contiguous box into one run") {
  StridedBox box;
  box.ndim = 3;
  const int64_t shape[3] = {4, 1, 6};
  const int64_t strides[3] = {6, 99, 1};
  for (int d = 0; d < 3; ++d) {
    box.shape[d] = shape[d];
    box.src_strides[d] = box.dst_strides[d] = strides[d];
  }
  const StridedBox s = simplify(box);
  CHECK(s.ndim == 1);
  CHECK(s.shape[0] == 24);
}

TEST_CASE("q8_0: SIMD and scalar quantizers write the same blocks, and decoding gives the values back closely") {
  // blocks of magnitudes whose f16 scales are normal numbers
  std::mt19937 rng(2);
  std::vector<float> x(32 * 19);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = std::ldexp(static_cast<float>(rng() % 2001) - 1000.0f, static_cast<int>(i / 32) * 27 / 19 - 17);
  const auto [scalar, simd] = scalar_and_simd([&] {
    std::vector<uint8_t> out(19 * 34);
    quantize(DType::Q8_0, x.data(), out.data(), 1, x.size(), QuantParams{});
    return out;
  });
  CHECK(scalar == simd);
  std::vector<float> back(x.size());
  dequantize(DType::Q8_0, scalar.data(), back.data(), x.size(), QuantParams{});
  for (size_t b = 0; b < 19; ++b) {
    float amax = 0.0f;
    for (size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    for (size_t j = 0; j < 32; ++j) REQUIRE(std::fabs(back[b * 32 + j] - x[b * 32 + j]) <= amax / 127.0f * 0.6f);
  }
}

TEST_CASE("tq2_0 and i2_s: SIMD and scalar quantizers agree on Inf, NaN and values at the zero threshold") {
  std::vector<float> x = every_kind_of_float(256 * 8, 3);
  for (size_t i = 0; i < x.size(); i += 5) x[i] = (i % 2 ? -1.0f : 1.0f) * 1e-6f;
  for (DType t : {DType::TQ2_0, DType::I2_S}) {
    const auto [scalar, simd] = scalar_and_simd([&] {
      std::vector<uint8_t> out(static_cast<size_t>(row_nbytes(t, x.size())));
      quantize(t, x.data(), out.data(), 1, x.size(), QuantParams{});
      return out;
    });
    CHECK(scalar == simd);
  }
}

TEST_CASE("the searching quantizers: SIMD and scalar paths write the same blocks, with and without importance") {
  // normal-ish rows at several magnitudes, then edge groups: zero, constant, one huge value, negative only
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const size_t n_per_row = 768, n_rows = 6;
  std::vector<float> x(n_rows * n_per_row);
  for (size_t i = 0; i < x.size(); ++i) x[i] = normal(rng) * std::ldexp(1.0f, static_cast<int>(i / 256 % 7) * 6 - 18);
  for (size_t i = 0; i < 32; ++i) {
    x[256 + i] = 0.0f;
    x[320 + i] = 0.75f;
    x[400 + i] = -std::fabs(x[400 + i]);
  }
  x[1000] = 1e30f;
  std::vector<float> importance(n_per_row);
  for (size_t i = 0; i < n_per_row; ++i) importance[i] = i % 11 == 0 ? 0.0f : std::fabs(normal(rng));
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K,
                  DType::Q6_K, DType::IQ4_NL, DType::IQ4_XS}) {
    for (const float* weights : {static_cast<const float*>(nullptr), static_cast<const float*>(importance.data())}) {
      QuantParams params;
      params.importance = weights;
      const auto [scalar, simd] = scalar_and_simd([&] {
        std::vector<uint8_t> out(static_cast<size_t>(row_nbytes(t, x.size())));
        quantize(t, x.data(), out.data(), n_rows, n_per_row, params);
        return out;
      });
      CHECK_MESSAGE(scalar == simd, traits(t).name << (weights ? " with importance" : ""));
    }
  }
}

TEST_CASE("abs_stats sums in the same order with and without SIMD") {
  const std::vector<float> x = every_kind_of_float(1003, 4);
  const auto [scalar, simd] = scalar_and_simd([&] {
    const AbsStats s = abs_stats(x.data(), x.size());
    return std::vector<double>{s.sum_abs, s.max_abs, s.min_nonzero_abs};
  });
  CHECK(std::memcmp(scalar.data(), simd.data(), 3 * sizeof(double)) == 0);
}

#ifdef PYCONV_AVX2_OBJECTS
// Symbols a linker merges across objects (inline functions, template instantiations: weak or unique
// definitions) must not come from code compiled for AVX2: the linker may keep that copy for baseline
// callers too, which then fault on CPUs without AVX2. The objects are the library's and the same
// sources at -O0, where nothing is inlined away.
TEST_CASE("the AVX2 objects define their entry points and nothing a linker could share with baseline code") {
  const std::string objects = PYCONV_AVX2_OBJECTS;
  size_t start = 0;
  int checked = 0;
  while (start < objects.size()) {
    size_t end = objects.find(':', start);
    if (end == std::string::npos) end = objects.size();
    const std::string object = objects.substr(start, end - start);
    start = end + 1;
    FILE* nm = ::popen(("nm -C --defined-only --extern-only '" + object + "'").c_str(), "r");
    REQUIRE(nm != nullptr);
    char line[4096];
    int entry_points = 0;
    while (std::fgets(line, sizeof line, nm)) {
      std::string l(line);
      if (!l.empty() && l.back() == '\n') l.pop_back();
      // "<address> <type> <name>"
      const size_t type_at = l.find(' ');
      REQUIRE(type_at != std::string::npos);
      const char type = l[type_at + 1];
      const std::string name = l.substr(type_at + 3);
      CHECK_MESSAGE((type == 'T' && name.rfind("pyconv::simd::", 0) == 0), object << ": " << l);
      ++entry_points;
    }
    CHECK(::pclose(nm) == 0);
    CHECK_MESSAGE(entry_points > 0, object << " defines no entry point");
    ++checked;
  }
  CHECK(checked == 4);
}
#endif
