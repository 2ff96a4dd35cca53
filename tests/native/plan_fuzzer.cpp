// A fuzz target over the engine's untrusted input, the plan. Bytes become a small plan (sources over
// a scratch input file, tensors of parts and ops, raw/safetensors/GGUF files), mostly well formed
// and now and then with an extreme value. validate and layout must accept it or throw Error; an
// accepted plan must execute or throw Error, give the same bytes with one thread as with two, and
// (without ternarization) with small chunks as with large ones. Anything else (a crash, a sanitizer report, another
// exception) is a finding. libFuzzer calls LLVMFuzzerTestOneInput; fuzz_main.cpp is a plain driver.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "engine/executor.h"
#include "engine/layout.h"
#include "helpers.h"
#include "plan_fuzzer.h"

using namespace pyconv;

namespace {

// Reads the fuzzer's bytes as choices; past the end every choice is 0.
class Choices {
 public:
  Choices(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  uint64_t bits(int n) {
    uint64_t v = 0;
    for (int i = 0; i < (n + 7) / 8; ++i) v = v << 8 | (at_ < size_ ? data_[at_++] : 0);
    return n >= 64 ? v : v & ((uint64_t{1} << n) - 1);
  }
  uint32_t below(uint32_t bound) { return bound ? static_cast<uint32_t>(bits(16) % bound) : 0; }
  bool one_in(uint32_t n) { return below(n) == 0; }
  // A count or extent: usually small, rarely extreme (the bounds checks must hold for all).
  int64_t extent(int64_t typical) {
    if (!one_in(24)) return below(static_cast<uint32_t>(typical) + 1);
    static constexpr int64_t kExtreme[] = {-1, 0, 1, int64_t{1} << 31, int64_t{1} << 32, int64_t{1} << 47, int64_t{1} << 62,
                                           std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()};
    return kExtreme[below(std::size(kExtreme))];
  }
  template <typename T>
  const T& pick(const std::vector<T>& v) { return v[below(static_cast<uint32_t>(v.size()))]; }
  // One plan in three breaks rules on purpose, a few places each; the others are well formed but
  // for what random types and shapes break by themselves.
  void decide_breaking() { breaking_ = one_in(3); }
  bool breaks(uint32_t n) { return breaking_ && one_in(n); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
  bool breaking_ = false;
};

const std::vector<DType> kTypes = {DType::F32,  DType::F16,   DType::BF16,  DType::F64,   DType::I32,
                                   DType::I8,   DType::U8,    DType::BOOL,  DType::Q8_0,  DType::Q4_0,
                                   DType::Q6_K, DType::TQ1_0, DType::TQ2_0, DType::I2_S,  DType::IQ2_XXS};
const std::vector<DType> kFloats = {DType::F32, DType::F16, DType::BF16, DType::F64};

// The extent of one dim: small, or a multiple of a block row so that block types fit now and then.
int64_t dim(Choices& c) {
  static const std::vector<int64_t> kRows = {32, 64, 128, 256};
  if (c.breaks(8)) return c.extent(11);
  return c.one_in(3) ? c.pick(kRows) * (1 + c.below(2)) : 1 + c.below(12);
}

// Elements a part reads: one past the largest source index it reaches (saturating).
uint64_t reach(const Part& p) {
  uint64_t last = static_cast<uint64_t>(std::max<int64_t>(p.src_offset, 0));
  for (size_t d = 0; d < p.shape.size(); ++d) {
    if (p.shape[d] <= 0) return 0;
    if (p.src_strides[d] < 0 || p.src_strides[d] > (int64_t{1} << 24) || p.shape[d] > (int64_t{1} << 24)) return 1 << 20;
    last += static_cast<uint64_t>(p.shape[d] - 1) * static_cast<uint64_t>(p.src_strides[d]);
  }
  return last + 1;
}

// The plan and the input file its sources read: each part gets a source just large enough for it
// (in one to three segments), then some choices break the rules the engine must enforce.
Plan make_plan(Choices& c, const std::string& input_path, std::vector<uint8_t>& input, const std::string& dir) {
  Plan p;
  p.inputs = {input_path};
  c.decide_breaking();
  const uint32_t n_files = 1 + c.below(2);
  const uint32_t n_tensors = 1 + c.below(3);
  for (uint32_t i = 0; i < n_tensors; ++i) {
    Tensor t;
    t.name = "t" + std::to_string(i);
    const int nd = 1 + static_cast<int>(c.below(3));
    for (int d = 0; d < nd; ++d) t.shape.push_back(dim(c));
    t.layout = t.shape;
    if (c.one_in(4) && t.shape.back() % 2 == 0) {  // a layout that splits the last dim in two
      t.layout.back() /= 2;
      t.layout.insert(t.layout.end() - 1, 2);
    }
    t.file = c.below(n_files + (c.breaks(20) ? 1 : 0));
    const uint32_t n_parts = c.one_in(8) ? 0 : 1 + c.below(2);
    DType first_source = DType::F32;
    for (uint32_t k = 0; k < n_parts; ++k) {
      Part part;
      const size_t ld = t.layout.size();
      part.shape = t.layout;
      part.dst_start.assign(ld, 0);
      if (n_parts == 2) {  // two halves along some dim
        const size_t d = c.below(static_cast<uint32_t>(ld));
        const int64_t half = t.layout[d] / 2;
        part.shape[d] = k == 0 ? half : t.layout[d] - half;
        part.dst_start[d] = k == 0 ? 0 : half;
      }
      part.src_strides = testing::row_major(part.shape);
      if (c.one_in(3) && ld >= 2) std::swap(part.src_strides[ld - 1], part.src_strides[ld - 2]);  // a transpose
      if (c.breaks(4)) part.src_strides[c.below(static_cast<uint32_t>(ld))] = c.extent(300);
      if (c.breaks(4)) part.shape[c.below(static_cast<uint32_t>(ld))] = c.extent(300);
      if (c.breaks(6)) part.dst_start[c.below(static_cast<uint32_t>(ld))] = c.extent(4);
      part.src_offset = c.one_in(4) ? c.below(64) : c.breaks(6) ? c.extent(64) : 0;

      Source src;
      src.dtype = c.one_in(2) ? c.pick(kFloats) : c.pick(kTypes);
      if (k == 0) first_source = src.dtype;
      if (c.one_in(10)) {  // bit fields of bytes
        src.dtype = DType::U8;
        const uint32_t bits = 1 + c.below(8);
        part.field = BitField{bits, c.breaks(2) ? c.below(8) : c.below(9 - bits), -1.0f, 0.5f};
      }
      const DTypeTraits& tr = traits(src.dtype);
      const uint64_t elems = (reach(part) + tr.row_elems - 1) / tr.row_elems * tr.row_elems;
      const uint64_t bytes = std::min<uint64_t>(elems / tr.block_elems * tr.block_bytes + tr.tail_bytes, 1 << 16);
      const uint32_t n_segments = 1 + c.below(3);
      uint64_t left = bytes;
      for (uint32_t g = 0; g < n_segments; ++g) {
        Segment seg;
        seg.file = c.breaks(20) ? 1 : 0;  // input 1 does not exist
        seg.nbytes = g + 1 == n_segments ? left : std::min<uint64_t>(left, tr.block_bytes * c.below(64));
        if (c.breaks(10)) seg.nbytes += c.below(3);
        left -= std::min(left, seg.nbytes);
        input.resize(input.size() + c.below(5));  // a gap, so that data starts at any offset
        seg.offset = c.breaks(20) ? static_cast<uint64_t>(c.extent(1)) : input.size();
        input.resize(input.size() + seg.nbytes);
        src.segments.push_back(seg);
      }
      part.source = static_cast<uint32_t>(p.sources.size()) + (c.breaks(20) ? 1 : 0);
      p.sources.push_back(src);
      t.parts.push_back(part);
    }
    t.out = c.one_in(3) ? first_source : c.one_in(2) ? c.pick(kFloats) : c.pick(kTypes);
    if (c.one_in(3)) t.ops.push_back(Op{OpKind::AddScalar, static_cast<double>(c.below(7)) - 3.0, true, DType::F32});
    if (c.one_in(3))
      t.ops.push_back(Op{OpKind::TernarizeAbsmean, 0.0, c.one_in(2), c.breaks(4) ? c.pick(kTypes) : c.pick(kFloats)});
    if (t.ops.size() == 2 && c.breaks(4)) std::swap(t.ops[0], t.ops[1]);
    p.tensors.push_back(t);
  }

  for (uint32_t f = 0; f < n_files; ++f) {
    OutputFileSpec out;
    out.path = dir + "/out" + std::to_string(f);
    out.container = static_cast<Container>(c.below(3));
    out.alignment = c.breaks(10) ? c.below(100) : 32;
    if (out.container == Container::Raw) {
      // tensors one after another (an invalid tensor takes no room), sometimes moved
      uint64_t at = c.below(16);
      for (Tensor& t : p.tensors) {
        if (t.file != f) continue;
        t.offset = c.breaks(10) ? static_cast<uint64_t>(c.extent(1)) : at;
        try {
          at = t.offset + tensor_nbytes(t.out, numel(t.shape));
        } catch (const Error&) {
        }
      }
      out.size = c.breaks(8) ? static_cast<uint64_t>(c.extent(64)) : at;
      if (c.one_in(3)) out.blobs.push_back({0, std::string(c.below(24), 'h')});
    }
    p.files.push_back(out);
  }
  return p;
}

std::string list(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
  return out + "]";
}

// The plan in a few lines, for a finding's report.
std::string describe(const Plan& p) {
  std::string out;
  for (size_t i = 0; i < p.sources.size(); ++i) {
    out += "\n  source " + std::to_string(i) + " " + traits(p.sources[i].dtype).name + ":";
    for (const Segment& s : p.sources[i].segments)
      out += " (in " + std::to_string(s.file) + " @" + std::to_string(s.offset) + " +" + std::to_string(s.nbytes) + ")";
  }
  for (const Tensor& t : p.tensors) {
    out += "\n  tensor " + t.name + " " + list(t.shape) + " as " + list(t.layout) + " -> " + traits(t.out).name + " in file " +
           std::to_string(t.file) + " @" + std::to_string(t.offset);
    for (const Part& q : t.parts)
      out += "\n    part of source " + std::to_string(q.source) + " @" + std::to_string(q.src_offset) + " strides " +
             list(q.src_strides) + " at " + list(q.dst_start) + " shape " + list(q.shape) + " bits " + std::to_string(q.field.bits) +
             ">>" + std::to_string(q.field.shift);
    for (const Op& op : t.ops)
      out += std::string("\n    op ") + (op.kind == OpKind::AddScalar ? "add " + std::to_string(op.value) : "ternarize") +
             " round to " + traits(op.round_to).name;
  }
  for (const OutputFileSpec& f : p.files)
    out += "\n  file " + f.path + " container " + std::to_string(static_cast<int>(f.container)) + " size " + std::to_string(f.size);
  return out;
}

// A scratch folder for the whole process, and its input file.
struct Scratch {
  testing::ScratchDir dir;
  std::string input = dir.file("input");
};

Scratch& scratch() {
  static Scratch s;
  return s;
}

constexpr uint64_t kMaxOutputBytes = 1 << 20;  // executed plans stay small and fast, per file

std::vector<std::vector<uint8_t>> run(Plan plan, int threads, uint64_t chunk) {
  for (const OutputFileSpec& f : plan.files) testing::remove_file(f.path);
  execute(plan, ExecOptions{threads, chunk}, nullptr);
  std::vector<std::vector<uint8_t>> out;
  for (const OutputFileSpec& f : plan.files) {
    out.push_back(testing::read_file(f.path));
    if (out.back().size() != f.size) throw std::logic_error("a file's size differs from its layout:" + describe(plan));
  }
  return out;
}

}  // namespace

// How far the inputs got, for the plain driver's summary (a fuzzer that only makes invalid plans
// tests little).
PlanFuzzCounts plan_fuzz_counts;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Scratch& s = scratch();
  Choices c(data, size);
  std::vector<uint8_t> input;
  Plan plan = make_plan(c, s.input, input, s.dir.path());
  // the input's bytes: a fixed pattern with bytes the fuzzer chooses here and there
  for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<uint8_t>(i * 131 + 7);
  for (size_t i = 0, n = input.empty() ? 0 : c.below(64); i < n; ++i)
    input[c.below(static_cast<uint32_t>(input.size()))] = static_cast<uint8_t>(c.bits(8));
  testing::write_file(s.input, input);

  try {
    Plan laid = plan;
    layout(laid);
    for (const OutputFileSpec& f : laid.files)
      if (f.size > kMaxOutputBytes) return 0;
  } catch (const Error&) {
    return 0;  // refused: what a bad plan must get
  }
  ++plan_fuzz_counts.laid_out;
  const uint64_t chunk = 64 + c.below(4096);
  std::vector<std::vector<uint8_t>> first;
  try {
    first = run(plan, 1, chunk);
  } catch (const Error&) {
    return 0;  // refused while running (an input range outside the file, a kernel's rule)
  }
  if (run(plan, 2, chunk) != first) throw std::logic_error("output bytes depend on the thread count:" + describe(plan));
  // Ternarization's mean is a double sum grouped by chunks: only its f32 is promised to agree
  // across chunk sizes, which adversarial values need not give.
  bool ternarizes = false;
  for (const Tensor& t : plan.tensors)
    for (const Op& op : t.ops) ternarizes = ternarizes || op.kind == OpKind::TernarizeAbsmean;
  if (!ternarizes && run(plan, 2, 4 << 20) != first)
    throw std::logic_error("output bytes depend on the chunk size:" + describe(plan));
  ++plan_fuzz_counts.executed;
  return 0;
}
