#include "engine/executor.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <thread>

#include "core/error.h"
#include "engine/layout.h"
#include "io/mapped_file.h"
#include "io/output_file.h"
#include "kernels/cast.h"
#include "kernels/gather.h"
#include "kernels/quant.h"

namespace pyconv {
namespace {

// Elements converted to f32 at a time when ops, statistics or quantization need floats: small
// enough to stay in L1/L2. Quantizers take it rounded down to whole rows of their blocks (all of
// 4096 for the built-in types). The statistics pass always sums runs of exactly this length: its
// double sums, and so the ternary scales, depend on where runs start.
constexpr size_t kSubBlock = 4096;

// A source with its segments indexed by their first element (in units: elements, or blocks for
// block types), and the parameters its tail holds.
struct SourceView {
  DType dtype = DType::F32;
  QuantParams params;
  uint64_t unit_elems = 1;   // elements per unit
  uint64_t unit_bytes = 4;   // bytes per unit
  std::vector<uint64_t> starts;  // first unit of each segment, plus the total at the end
  std::vector<const uint8_t*> ptrs;
  std::vector<const MappedFile*> files;
  std::vector<uint64_t> offsets;
  // A scaled source (engine/plan.h: Scale): its scale source, and the geometry of its blocks.
  const SourceView* scale = nullptr;
  int scale_dims = 0;
  uint64_t shape[kMaxDims] = {}, block[kMaxDims] = {}, scale_strides[kMaxDims] = {};
  // Low-rank updates (engine/plan.h: LowRank), their small factors decoded to f32 up front.
  struct Update {
    std::vector<float> a, b;
    uint64_t cols = 0, rank = 0;
    float factor = 1.0f;
  };
  std::vector<Update> updates;

  // Segment holding `unit`.
  size_t segment_of(uint64_t unit) const {
    return static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), unit) - starts.begin()) - 1;
  }
  const uint8_t* at(uint64_t unit) const {
    const size_t s = segment_of(unit);
    return ptrs[s] + (unit - starts[s]) * unit_bytes;
  }
  // The element of the scale source that element e is multiplied by.
  uint64_t scale_index(uint64_t e) const {
    const int last = scale_dims - 1;
    uint64_t rest = e / shape[last], idx = e % shape[last] / block[last];
    for (int d = last - 1; d >= 0; --d) {
      idx += rest % shape[d] / block[d] * scale_strides[d];
      rest /= shape[d];
    }
    return idx;
  }
  // Multiplies the f32 values of elements [e, e + n) by their scales: one scale per run inside a
  // block of the last dim.
  void apply_scale(uint64_t e, float* dst, size_t n) const {
    const uint64_t cols = shape[scale_dims - 1], bc = block[scale_dims - 1];
    while (n > 0) {
      const uint64_t col = e % cols;
      const size_t take = static_cast<size_t>(std::min<uint64_t>(n, std::min(bc - col % bc, cols - col)));
      float f;
      cast(scale->dtype, scale->at(scale_index(e)), DType::F32, &f, 1);
      for (size_t i = 0; i < take; ++i) dst[i] *= f;
      dst += take;
      e += take;
      n -= take;
    }
  }
  // Adds each update's factor * (B @ A) to the f32 values of elements [e, e + n), a row at a time.
  void apply_updates(uint64_t e0, float* dst0, size_t n0) const {
    thread_local std::vector<float> acc;
    for (const Update& u : updates) {
      uint64_t e = e0;
      float* dst = dst0;
      size_t n = n0;
      while (n > 0) {
        const uint64_t row = e / u.cols, col = e % u.cols;
        const size_t take = static_cast<size_t>(std::min<uint64_t>(n, u.cols - col));
        acc.assign(take, 0.0f);
        for (uint64_t k = 0; k < u.rank; ++k) {
          const float bk = u.b[row * u.rank + k];
          const float* a = u.a.data() + k * u.cols + col;
          for (size_t i = 0; i < take; ++i) acc[i] += bk * a[i];
        }
        for (size_t i = 0; i < take; ++i) dst[i] += acc[i] * u.factor;
        dst += take;
        e += take;
        n -= take;
      }
    }
  }
  void release(uint64_t first, uint64_t end) const {
    if (end <= first) return;
    for (size_t s = segment_of(first); s + 1 < starts.size() && starts[s] < end; ++s) {
      const uint64_t a = std::max(first, starts[s]), b = std::min(end, starts[s + 1]);
      files[s]->release(offsets[s] + (a - starts[s]) * unit_bytes, (b - a) * unit_bytes);
    }
  }
};

// Sums of chunks are added in chunk order, and chunks are fixed by the plan, so the mean does not
// depend on the thread count.
void merge(AbsStats& into, const AbsStats& o) {
  into.sum_abs += o.sum_abs;
  into.max_abs = std::max(into.max_abs, o.max_abs);
  into.min_nonzero_abs = std::min(into.min_nonzero_abs, o.min_nonzero_abs);
}

struct ChunkGeometry {
  int k = 0;            // chunks fix dims < k, cut dim k into steps, and take dims > k whole
  int64_t step = 1;
  uint64_t steps = 1;   // ceil(layout[k] / step)
  uint64_t count = 1;
  uint64_t inner = 1;   // elements per index of dim k
};

struct TensorRun {
  const Tensor* tensor = nullptr;
  DType work = DType::F32;
  bool gaps = false;
  bool needs_stats = false;
  bool ternarize = false;   // decided after stats
  bool packed = false;      // blocks packed from codes and scales (engine/layout.h: packs)
  const Op* ternarize_op = nullptr;
  float s = 0.0f;
  float magnitude = 0.0f;  // 1/s rounded as the model rounds its weights
  QuantParams quant;
  size_t quant_run = kSubBlock;  // elements per quantizer call
  ChunkGeometry geo;
  std::vector<int64_t> layout_strides;
  std::vector<AbsStats> chunk_stats;
  std::atomic<uint64_t> chunks_left{0};
};

struct Task {
  uint32_t tensor;
  uint64_t chunk;
};

int64_t prod(const std::vector<int64_t>& v, size_t from) {
  int64_t p = 1;
  for (size_t i = from; i < v.size(); ++i) p *= v[i];
  return p;
}

uint64_t block_for_chunking(DType out) {
  const DTypeTraits& tr = traits(out);
  return tr.is_block() ? tr.row_elems : 1;
}

ChunkGeometry plan_chunks(const std::vector<int64_t>& L, uint64_t target_elems, uint64_t block) {
  const int n = static_cast<int>(L.size());
  ChunkGeometry g;
  // The shallowest dim k whose slices fit the target, as long as chunk starts stay block aligned;
  // if even dim 0 cannot be cut on block boundaries, the tensor is one chunk.
  bool whole = false;
  int k = 0;
  for (int cand = 0; cand < n; ++cand) {
    const uint64_t inner = static_cast<uint64_t>(prod(L, static_cast<size_t>(cand) + 1));
    const bool aligned = cand < n - 1 ? inner % block == 0 : static_cast<uint64_t>(L[n - 1]) % block == 0 || n == 1;
    if (!aligned) {
      whole = cand == 0;
      break;
    }
    k = cand;
    if (inner <= target_elems) break;
  }
  g.k = k;
  g.inner = static_cast<uint64_t>(prod(L, static_cast<size_t>(k) + 1));
  int64_t step = static_cast<int64_t>(std::max<uint64_t>(1, target_elems / g.inner));
  if (g.inner == 1 && block > 1)  // cutting inside rows: whole blocks only
    step = std::max<int64_t>(static_cast<int64_t>(block), step / static_cast<int64_t>(block) * static_cast<int64_t>(block));
  if (whole || step > L[k]) step = L[k];
  g.step = step;
  g.steps = static_cast<uint64_t>((L[k] + step - 1) / step);
  g.count = static_cast<uint64_t>(prod(std::vector<int64_t>(L.begin(), L.begin() + k), 0)) * g.steps;
  return g;
}

struct ChunkBox {
  std::vector<int64_t> start, end;
  uint64_t flat_begin = 0, flat_count = 0;
};

ChunkBox chunk_box(const TensorRun& r, uint64_t c) {
  const std::vector<int64_t>& L = r.tensor->layout;
  const int n = static_cast<int>(L.size());
  ChunkBox b;
  b.start.assign(n, 0);
  b.end = L;
  uint64_t prefix = c / r.geo.steps;
  const uint64_t j = c % r.geo.steps;
  for (int d = r.geo.k - 1; d >= 0; --d) {
    b.start[d] = static_cast<int64_t>(prefix % static_cast<uint64_t>(L[d]));
    b.end[d] = b.start[d] + 1;
    prefix /= static_cast<uint64_t>(L[d]);
  }
  b.start[r.geo.k] = static_cast<int64_t>(j) * r.geo.step;
  b.end[r.geo.k] = std::min<int64_t>(L[r.geo.k], b.start[r.geo.k] + r.geo.step);
  for (int d = 0; d < n; ++d) b.flat_begin += static_cast<uint64_t>(b.start[d] * r.layout_strides[d]);
  b.flat_count = static_cast<uint64_t>(b.end[r.geo.k] - b.start[r.geo.k]) * r.geo.inner;
  return b;
}

void convert_run(DType from, const uint8_t* src, DType to, uint8_t* dst, size_t n, const BitField& field,
                 const QuantParams& params) {
  if (field.bits != 0) {
    if (to != DType::F32) throw Error("internal: bit fields decode to f32");
    unpack_bits(src, reinterpret_cast<float*>(dst), n, field.bits, field.shift, field.offset, field.scale);
  } else if (from == to) {
    std::memcpy(dst, src, static_cast<size_t>(row_nbytes(from, n)));
  } else if (traits(from).kind == TypeKind::Plain) {  // a scaled source's integer codes
    if (to != DType::F32) throw Error("internal: integer codes decode to f32");
    integers_to_f32(from, src, reinterpret_cast<float*>(dst), n);
  } else if (traits(from).is_block()) {
    if (to != DType::F32) throw Error("internal: dequantization goes to f32");
    dequantize(from, src, reinterpret_cast<float*>(dst), n, params);
  } else {
    cast(from, src, to, dst, n);
  }
}

class Worker {
 public:
  Worker(const std::vector<SourceView>& sources, const std::vector<std::unique_ptr<OutputFile>>& outs)
      : sources_(sources), outs_(outs) {}

  // Gathers the chunk into work-dtype elements; returns a pointer to them (maybe into a map).
  const uint8_t* gather(const TensorRun& r, const ChunkBox& b) {
    const Tensor& t = *r.tensor;
    // Zero-copy: one part covers the whole chunk with a contiguous run of one segment.
    if (t.parts.size() == 1 && !r.gaps && r.work == sources_[t.parts[0].source].dtype && !sources_[t.parts[0].source].scale &&
        sources_[t.parts[0].source].updates.empty()) {
      const Part& p = t.parts[0];
      const SourceView& sv = sources_[p.source];
      int64_t first = 0;
      bool contiguous = true;
      int64_t expect = 1;
      for (int d = static_cast<int>(t.layout.size()) - 1; d >= 0; --d) {
        const int64_t ext = b.end[d] - b.start[d];
        first += (b.start[d] - p.dst_start[d]) * p.src_strides[d];
        if (ext > 1 && p.src_strides[d] != expect) contiguous = false;
        expect *= ext;
      }
      if (contiguous && b.flat_count > 0) {
        const uint64_t u0 = static_cast<uint64_t>(p.src_offset + first) / sv.unit_elems;
        const uint64_t un = b.flat_count / sv.unit_elems;
        const size_t s = sv.segment_of(u0);
        if (u0 + un <= sv.starts[s + 1]) {
          released_.push_back({&sv, u0, u0 + un});
          return sv.ptrs[s] + (u0 - sv.starts[s]) * sv.unit_bytes;
        }
      }
    }
    const size_t work_bytes = static_cast<size_t>(row_nbytes(r.work, b.flat_count));
    work_.resize(work_bytes + 64);
    if (r.gaps) std::memset(work_.data(), 0, work_bytes);
    const int n = static_cast<int>(t.layout.size());
    for (const Part& p : t.parts) {
      StridedBox box;
      box.ndim = n;
      int64_t src_off = p.src_offset, dst_off = 0;
      bool empty = false;
      for (int d = 0; d < n; ++d) {
        const int64_t lo = std::max(b.start[d], p.dst_start[d]);
        const int64_t hi = std::min(b.end[d], p.dst_start[d] + p.shape[d]);
        if (lo >= hi) {
          empty = true;
          break;
        }
        box.shape[d] = hi - lo;
        box.src_strides[d] = p.src_strides[d];
        box.dst_strides[d] = r.layout_strides[d];
        src_off += (lo - p.dst_start[d]) * p.src_strides[d];
        dst_off += lo * r.layout_strides[d];
      }
      if (empty) continue;
      dst_off -= static_cast<int64_t>(b.flat_begin);
      if (r.packed) pack_box(sources_[p.source], src_off, box, 0, traits(r.work), work_.data() + static_cast<uint64_t>(dst_off) / traits(r.work).block_elems * traits(r.work).block_bytes);
      else copy_part(sources_[p.source], p.field, src_off, box, r.work, work_.data(), static_cast<uint64_t>(dst_off));
    }
    return work_.data();
  }

  void release_consumed() {
    for (const Released& rel : released_) rel.view->release(rel.first, rel.end);
    released_.clear();
  }

  void encode(const TensorRun& r, const uint8_t* w, uint64_t n, uint64_t flat_begin) {
    const Tensor& t = *r.tensor;
    const uint64_t out_bytes = row_nbytes(t.out, n);
    const uint64_t out_off = t.offset + row_nbytes(t.out, flat_begin);
    const uint8_t* out = nullptr;
    // Ops and quantizers work on f32; a raw copy (same type, no ops) and plain casts skip that.
    const bool need_floats = !t.ops.empty() || (r.work != t.out && traits(t.out).is_block());
    if (r.work == t.out && !need_floats) {
      out = w;
    } else {
      out_.resize(static_cast<size_t>(out_bytes) + 64);
      if (!need_floats) {
        cast(r.work, w, t.out, out_.data(), static_cast<size_t>(n));
      } else {
        floats_.resize(r.quant_run);
        float* tmp = floats_.data();
        const bool to_float = traits(t.out).is_float();
        for (uint64_t i = 0, m = 0; i < n; i += m) {
          m = std::min<uint64_t>(r.quant_run, n - i);
          // importance weights are per column: a run stops at its row's end
          if (!t.importance.empty()) m = std::min<uint64_t>(m, row_elems_of(t) - (flat_begin + i) % row_elems_of(t));
          to_floats(r, w + row_nbytes(r.work, i), tmp, m);
          uint8_t* dst = out_.data() + row_nbytes(t.out, i);
          if (to_float) cast(DType::F32, tmp, t.out, dst, m);
          else quantize(t.out, tmp, dst, 1, m, with_importance(r, flat_begin + i));
        }
      }
      out = out_.data();
    }
    outs_[t.file]->write_at(out, out_bytes, out_off);
  }

  static uint64_t row_elems_of(const Tensor& t) { return static_cast<uint64_t>(t.shape.back()); }

  // The tensor's parameters, with the importance of the columns from element `at` of its row on
  // (the row of its matrix) when it has any.
  static QuantParams with_importance(const TensorRun& r, uint64_t at) {
    QuantParams q = r.quant;
    const Tensor& t = *r.tensor;
    if (t.importance.empty()) return q;
    const uint64_t cols = row_elems_of(t);
    const uint64_t rows_per_matrix = t.shape.size() > 1 ? static_cast<uint64_t>(t.shape[t.shape.size() - 2]) : 1;
    const uint64_t matrix = at / cols / rows_per_matrix;
    q.importance = t.importance.data() + matrix * cols + at % cols;
    return q;
  }

  AbsStats stats(const TensorRun& r, const uint8_t* w, uint64_t n) {
    AbsStats st;
    float tmp[kSubBlock];
    for (uint64_t i = 0; i < n; i += kSubBlock) {
      const size_t m = static_cast<size_t>(std::min<uint64_t>(kSubBlock, n - i));
      to_floats_before_ternarize(r, w + row_nbytes(r.work, i), tmp, m);
      // the smallest |x| is taken with I2_S's own zero test: "ternary" means its codes keep every value
      merge(st, abs_stats(tmp, m));
    }
    return st;
  }

 private:
  struct Released {
    const SourceView* view;
    uint64_t first, end;
  };

  // Bytes per element of a float or integer work type (quantized types are addressed per block).
  static size_t elem_bytes(DType t) { return traits(t).block_bytes; }

  void to_floats_before_ternarize(const TensorRun& r, const uint8_t* w, float* tmp, size_t m) {
    if (r.work == DType::F32) std::memcpy(tmp, w, m * 4);
    else convert_run(r.work, w, DType::F32, reinterpret_cast<uint8_t*>(tmp), m, BitField{}, QuantParams{});
    for (const Op& op : r.tensor->ops)
      if (op.kind == OpKind::AddScalar)
        for (size_t j = 0; j < m; ++j) tmp[j] = tmp[j] + static_cast<float>(op.value);
  }

  void to_floats(const TensorRun& r, const uint8_t* w, float* tmp, size_t m) {
    to_floats_before_ternarize(r, w, tmp, m);
    // q / s rounded to the model's type is q times the rounded magnitude, for q in {-1, -0, 0, 1}
    if (r.ternarize) ternarize(tmp, m, r.s, r.magnitude);
  }

  // Copies one part's box (element strides) from a source into the work buffer, `dst_off`
  // elements after its start.
  void copy_part(const SourceView& sv, const BitField& field, int64_t src_off, const StridedBox& box, DType work,
                 uint8_t* base, uint64_t dst_off) {
    release_if_dense(sv, src_off, box);
    if (sv.dtype == work && field.bits == 0 && !sv.scale && sv.updates.empty()) {
      uint8_t* dst = base + dst_off / sv.unit_elems * sv.unit_bytes;
      StridedBox ub = box;  // in units (blocks for quantized types)
      const int64_t ue = static_cast<int64_t>(sv.unit_elems);
      if (ue > 1) {
        for (int d = 0; d < ub.ndim; ++d) {
          if (d == ub.ndim - 1) ub.shape[d] /= ue;
          else {
            ub.src_strides[d] /= ue;
            ub.dst_strides[d] /= ue;
          }
        }
        src_off /= ue;
      }
      copy_units(sv, static_cast<uint64_t>(src_off), simplify(ub), dst);
    } else {
      convert_box(sv, field, src_off, box, 0, work, base + dst_off * elem_bytes(work));
    }
  }

  // A strided read (a permuted or sliced view) whose source span is not much larger than what it
  // reads is released with the chunk: nothing else is likely to need those pages. Sparse reads
  // (transposes cut into column bands) keep their pages until the whole tensor is done.
  void release_if_dense(const SourceView& sv, int64_t src_off, const StridedBox& box) {
    uint64_t span = 1, count = 1;
    for (int d = 0; d < box.ndim; ++d) {
      if (box.shape[d] == 0) return;
      span += static_cast<uint64_t>((box.shape[d] - 1) * box.src_strides[d]);
      count *= static_cast<uint64_t>(box.shape[d]);
    }
    if (span > 2 * count) return;
    const uint64_t first = static_cast<uint64_t>(src_off) / sv.unit_elems;
    released_.push_back({&sv, first, (static_cast<uint64_t>(src_off) + span + sv.unit_elems - 1) / sv.unit_elems});
  }

  // Same-type copy; splits the box until each piece lies in one segment.
  void copy_units(const SourceView& sv, uint64_t u0, const StridedBox& b, uint8_t* dst) {
    uint64_t span = 0;
    for (int d = 0; d < b.ndim; ++d) span += static_cast<uint64_t>((b.shape[d] - 1) * b.src_strides[d]);
    const size_t s = sv.segment_of(u0);
    if (u0 + span < sv.starts[s + 1]) {
      copy_strided(sv.ptrs[s] + (u0 - sv.starts[s]) * sv.unit_bytes, dst, b, sv.unit_bytes);
      if (b.ndim == 1 && b.src_strides[0] == 1) released_.push_back({&sv, u0, u0 + static_cast<uint64_t>(b.shape[0])});
      return;
    }
    if (b.ndim == 1 && b.src_strides[0] == 1 && b.dst_strides[0] == 1) {  // a run crossing segment boundaries
      uint64_t done = 0;
      const uint64_t len = static_cast<uint64_t>(b.shape[0]);
      while (done < len) {
        const size_t seg = sv.segment_of(u0 + done);
        const uint64_t take = std::min(len - done, sv.starts[seg + 1] - (u0 + done));
        std::memcpy(dst + done * sv.unit_bytes, sv.ptrs[seg] + (u0 + done - sv.starts[seg]) * sv.unit_bytes,
                    static_cast<size_t>(take * sv.unit_bytes));
        done += take;
      }
      released_.push_back({&sv, u0, u0 + len});
      return;
    }
    // Peel the outermost dim.
    StridedBox inner;
    if (b.ndim == 1) {
      for (int64_t i = 0; i < b.shape[0]; ++i)
        std::memcpy(dst + static_cast<size_t>(i * b.dst_strides[0]) * sv.unit_bytes,
                    sv.at(u0 + static_cast<uint64_t>(i * b.src_strides[0])), sv.unit_bytes);
      return;
    }
    inner.ndim = b.ndim - 1;
    for (int d = 1; d < b.ndim; ++d) {
      inner.shape[d - 1] = b.shape[d];
      inner.src_strides[d - 1] = b.src_strides[d];
      inner.dst_strides[d - 1] = b.dst_strides[d];
    }
    for (int64_t i = 0; i < b.shape[0]; ++i)
      copy_units(sv, u0 + static_cast<uint64_t>(i * b.src_strides[0]),
                 inner, dst + static_cast<size_t>(i * b.dst_strides[0]) * sv.unit_bytes);
  }

  // Blocks of `out` packed from a source's codes and scales (engine/layout.h: packs), a block at a
  // time: the codes and their scale may lie in different segments.
  void pack_box(const SourceView& sv, int64_t src_off, const StridedBox& b, int d, const DTypeTraits& out, uint8_t* dst) {
    if (d == b.ndim - 1) {
      const uint64_t e0 = static_cast<uint64_t>(src_off);
      for (int64_t k = 0; k < b.shape[d] / out.block_elems; ++k) {
        const uint64_t e = e0 + static_cast<uint64_t>(k * out.block_elems);
        out.pack(sv.at(e / sv.unit_elems), sv.scale->at(sv.scale_index(e)), dst + static_cast<size_t>(k) * out.block_bytes);
      }
      released_.push_back({&sv, e0 / sv.unit_elems, (e0 + static_cast<uint64_t>(b.shape[d])) / sv.unit_elems});
      return;
    }
    for (int64_t i = 0; i < b.shape[d]; ++i)
      pack_box(sv, src_off + i * b.src_strides[d], b, d + 1, out,
               dst + static_cast<size_t>(i * b.dst_strides[d] / out.block_elems) * out.block_bytes);
  }

  // Copy with conversion into f32 (or another float type): innermost runs convert in one call.
  void convert_box(const SourceView& sv, const BitField& field, int64_t src_off, const StridedBox& b, int d, DType work,
                   uint8_t* dst) {
    const size_t wb = elem_bytes(work);
    if (d == b.ndim - 1) {
      const uint64_t len = static_cast<uint64_t>(b.shape[d]);
      if (b.src_strides[d] == 1) {
        uint64_t done = 0;
        while (done < len) {
          const uint64_t e = static_cast<uint64_t>(src_off) + done;
          const uint64_t unit = e / sv.unit_elems;
          const size_t seg = sv.segment_of(unit);
          const uint64_t take = std::min(len - done, (sv.starts[seg + 1] - unit) * sv.unit_elems);
          uint8_t* out = dst + static_cast<size_t>(done * static_cast<uint64_t>(b.dst_strides[d])) * wb;
          convert_run(sv.dtype, sv.ptrs[seg] + (unit - sv.starts[seg]) * sv.unit_bytes, work, out, static_cast<size_t>(take),
                      field, sv.params);
          if (sv.scale) sv.apply_scale(e, reinterpret_cast<float*>(out), static_cast<size_t>(take));
          if (!sv.updates.empty()) sv.apply_updates(e, reinterpret_cast<float*>(out), static_cast<size_t>(take));
          done += take;
        }
        released_.push_back({&sv, static_cast<uint64_t>(src_off) / sv.unit_elems, (static_cast<uint64_t>(src_off) + len) / sv.unit_elems});
      } else {
        for (uint64_t i = 0; i < len; ++i) {
          const uint64_t e = static_cast<uint64_t>(src_off) + i * static_cast<uint64_t>(b.src_strides[d]);
          uint8_t* out = dst + static_cast<size_t>(i * static_cast<uint64_t>(b.dst_strides[d])) * wb;
          convert_run(sv.dtype, sv.at(e), work, out, 1, field, sv.params);
          if (sv.scale) sv.apply_scale(e, reinterpret_cast<float*>(out), 1);
          if (!sv.updates.empty()) sv.apply_updates(e, reinterpret_cast<float*>(out), 1);
        }
      }
      return;
    }
    for (int64_t i = 0; i < b.shape[d]; ++i)
      convert_box(sv, field, src_off + i * b.src_strides[d], b, d + 1, work, dst + static_cast<size_t>(i * b.dst_strides[d]) * wb);
  }

  const std::vector<SourceView>& sources_;
  const std::vector<std::unique_ptr<OutputFile>>& outs_;
  std::vector<uint8_t> work_, out_;
  std::vector<float> floats_;
  std::vector<Released> released_;
};

// How far from its start each output file is written without holes, so a reader (the fingerprint
// of the file) can follow the writers. Bytes no chunk writes (headers, alignment padding) count as
// written: they are in place before the workers start.
class WrittenPrefix {
 public:
  explicit WrittenPrefix(const std::vector<OutputFileSpec>& files) : files_(files.size()) {
    for (size_t i = 0; i < files.size(); ++i) files_[i].size = files[i].size;
  }
  void expect(uint32_t file, uint64_t begin, uint64_t end) { files_[file].ranges.push_back({begin, end}); }
  void ready() {
    for (File& f : files_) {
      std::sort(f.ranges.begin(), f.ranges.end());
      f.done.assign(f.ranges.size(), false);
    }
  }
  void written(uint32_t file, uint64_t begin) {
    std::lock_guard<std::mutex> lock(mu_);
    File& f = files_[file];
    const auto it = std::lower_bound(f.ranges.begin(), f.ranges.end(), std::make_pair(begin, uint64_t{0}));
    if (it == f.ranges.end() || it->first != begin) return;
    f.done[static_cast<size_t>(it - f.ranges.begin())] = true;
    while (f.next < f.done.size() && f.done[f.next]) ++f.next;
  }
  std::vector<uint64_t> prefixes() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<uint64_t> out;
    for (const File& f : files_) out.push_back(f.next < f.ranges.size() ? f.ranges[f.next].first : f.size);
    return out;
  }

 private:
  struct File {
    uint64_t size = 0;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    std::vector<bool> done;
    size_t next = 0;
  };
  std::vector<File> files_;
  mutable std::mutex mu_;
};

// x as storing it in a float type and reading it back gives it (the model's own rounding).
float round_to_type(DType t, float x) {
  uint8_t stored[8];
  float back;
  cast(DType::F32, &x, t, stored, 1);
  cast(t, stored, DType::F32, &back, 1);
  return back;
}

DType choose_work_dtype(const Plan& plan, const Tensor& t) {
  if (t.parts.empty()) return traits(t.out).is_block() ? DType::F32 : t.out;
  // Bit fields decode to floats; a source with a tail is decoded with its parameters, a scaled
  // source with its scales and an updated one with its updates, never copied.
  for (const Part& p : t.parts)
    if (p.field.bits != 0 || traits(plan.sources[p.source].dtype).tail_bytes != 0 || plan.sources[p.source].scale.source >= 0 ||
        !plan.sources[p.source].updates.empty())
      return DType::F32;
  const DType s = plan.sources[t.parts[0].source].dtype;
  bool same = true;
  for (const Part& p : t.parts) same = same && plan.sources[p.source].dtype == s;
  const DTypeTraits& st = traits(s);
  if (same && st.kind == TypeKind::Plain) return s;  // integers and bools are copied as they are
  if (!t.ops.empty()) return same && st.is_float() ? s : DType::F32;
  if (same && (s == t.out || st.is_float())) return s;
  return DType::F32;
}

}  // namespace

int default_threads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

std::vector<TensorReport> execute(Plan& plan, const ExecOptions& options, const ProgressFn& progress) {
  layout(plan);

  std::vector<std::unique_ptr<MappedFile>> inputs;
  for (const std::string& p : plan.inputs) inputs.push_back(std::make_unique<MappedFile>(p));

  std::vector<SourceView> views(plan.sources.size());
  for (size_t i = 0; i < plan.sources.size(); ++i) {
    const Source& s = plan.sources[i];
    SourceView& v = views[i];
    v.dtype = s.dtype;
    const DTypeTraits& tr = traits(s.dtype);
    v.unit_elems = tr.block_elems;
    v.unit_bytes = tr.block_bytes;
    const std::vector<uint64_t> blocks = block_bytes_per_segment(s);
    std::vector<uint8_t> tail;
    uint64_t at = 0;
    for (size_t k = 0; k < s.segments.size(); ++k) {
      const Segment& seg = s.segments[k];
      const MappedFile& f = *inputs[seg.file];
      const uint8_t* p = f.data(seg.offset, seg.nbytes);
      v.starts.push_back(at);
      v.ptrs.push_back(p);
      v.files.push_back(&f);
      v.offsets.push_back(seg.offset);
      at += blocks[k] / v.unit_bytes;
      tail.insert(tail.end(), p + blocks[k], p + seg.nbytes);  // the bytes after the last block
    }
    v.starts.push_back(at);
    if (tr.tail_bytes) v.params = tr.read_tail(tail.data());
    if (s.scale.source >= 0) {  // validated by layout(): a plain float source, blocks tiling the shape
      v.scale = &views[static_cast<size_t>(s.scale.source)];
      v.scale_dims = static_cast<int>(s.scale.shape.size());
      uint64_t stride = 1;
      for (int d = v.scale_dims - 1; d >= 0; --d) {
        v.shape[d] = static_cast<uint64_t>(s.scale.shape[d]);
        v.block[d] = static_cast<uint64_t>(s.scale.block[d]);
        v.scale_strides[d] = stride;
        stride *= (v.shape[d] + v.block[d] - 1) / v.block[d];
      }
    }
    if (s.segments.empty()) {  // sentinel segment keeps lookups simple for empty sources
      v.starts.insert(v.starts.begin(), 0);
      v.ptrs.push_back(nullptr);
      v.files.push_back(nullptr);
      v.offsets.push_back(0);
    }
  }

  // Update factors are small (rank rows or columns): decoded once, once every view is mapped.
  for (size_t i = 0; i < plan.sources.size(); ++i) {
    for (const LowRank& lr : plan.sources[i].updates) {
      SourceView::Update u;
      u.cols = static_cast<uint64_t>(lr.cols);
      u.rank = static_cast<uint64_t>(lr.rank);
      u.factor = lr.factor;
      // sizes checked by layout(): A holds rank * cols elements, B rows * rank
      for (auto [from, into, n] : {std::tuple{lr.a, &u.a, lr.rank * lr.cols}, std::tuple{lr.b, &u.b, lr.rows * lr.rank}}) {
        const SourceView& f = views[static_cast<size_t>(from)];
        into->resize(static_cast<size_t>(n));
        for (size_t k = 0; k < into->size(); ++k) cast(f.dtype, f.at(k), DType::F32, into->data() + k, 1);
      }
      views[i].updates.push_back(std::move(u));
    }
  }

  std::vector<std::unique_ptr<TensorRun>> runs;
  std::vector<Task> stat_tasks, write_tasks;
  uint64_t total = 0;
  for (uint32_t ti = 0; ti < plan.tensors.size(); ++ti) {
    const Tensor& t = plan.tensors[ti];
    auto r = std::make_unique<TensorRun>();
    r->tensor = &t;
    r->packed = packs(plan, t);
    r->work = r->packed ? t.out : choose_work_dtype(plan, t);
    uint64_t covered = 0;
    for (const Part& p : t.parts) covered += numel(p.shape);
    r->gaps = covered != numel(t.layout);
    if (r->gaps && traits(r->work).is_block()) r->work = DType::F32;
    for (const Op& op : t.ops)
      if (op.kind == OpKind::TernarizeAbsmean) r->ternarize_op = &op;
    const DTypeTraits& out = traits(t.out);
    r->needs_stats = r->ternarize_op != nullptr || out.needs_stats();
    if (out.is_block()) r->quant_run = out.row_elems <= kSubBlock ? kSubBlock / out.row_elems * out.row_elems : out.row_elems;
    r->layout_strides.assign(t.layout.size(), 1);
    for (int d = static_cast<int>(t.layout.size()) - 2; d >= 0; --d)
      r->layout_strides[d] = r->layout_strides[d + 1] * t.layout[d + 1];
    const uint64_t eb = std::max<uint64_t>(4, traits(r->work).block_bytes / traits(r->work).block_elems);
    // Chunks start on whole rows of blocks: the output's, and every block source's (decoded or
    // copied as it is, a source moves in whole blocks of its rows).
    uint64_t block = block_for_chunking(t.out);
    for (const Part& p : t.parts) block = std::lcm(block, block_for_chunking(plan.sources[p.source].dtype));
    if (numel(t.layout) == 0) r->geo.count = 0;
    else r->geo = plan_chunks(t.layout, std::max<uint64_t>(1, options.chunk_bytes / eb), block);
    r->chunks_left = r->geo.count;
    for (uint64_t c = 0; c < r->geo.count; ++c) {
      if (r->needs_stats) stat_tasks.push_back({ti, c});
      write_tasks.push_back({ti, c});
    }
    if (r->needs_stats) r->chunk_stats.resize(r->geo.count);
    total += t.nbytes * (r->needs_stats ? 2 : 1);
    runs.push_back(std::move(r));
  }

  WrittenPrefix prefix(plan.files);
  for (const Task& task : write_tasks) {
    const TensorRun& r = *runs[task.tensor];
    const ChunkBox b = chunk_box(r, task.chunk);
    if (b.flat_count == 0) continue;
    const uint64_t at = r.tensor->offset + row_nbytes(r.tensor->out, b.flat_begin);
    prefix.expect(r.tensor->file, at, at + row_nbytes(r.tensor->out, b.flat_count));
  }
  for (const auto& rp : runs)
    if (const uint32_t tail = traits(rp->tensor->out).tail_bytes) {
      const uint64_t at = rp->tensor->offset + rp->tensor->nbytes - tail;
      prefix.expect(rp->tensor->file, at, at + tail);
    }
  prefix.ready();

  std::vector<std::unique_ptr<OutputFile>> outs;
  for (const OutputFileSpec& f : plan.files) {
    outs.push_back(std::make_unique<OutputFile>(f.path, f.size));
    for (const auto& blob : f.blobs) outs.back()->write_at(blob.second.data(), blob.second.size(), blob.first);
  }

  const int threads = options.threads > 0 ? options.threads : default_threads();
  std::atomic<uint64_t> done{0};
  std::atomic<bool> stop{false};
  std::mutex err_mu;
  std::optional<Error> error;  // the first one, with the tensor it happened in

  auto run_phase = [&](const std::vector<Task>& tasks, bool stats_phase) {
    std::atomic<size_t> next{0};
    std::atomic<int> running{threads};
    std::mutex mu;
    std::condition_variable cv;
    auto body = [&]() {
      Worker w(views, outs);
      for (;;) {
        if (stop.load(std::memory_order_relaxed)) break;
        const size_t i = next.fetch_add(1);
        if (i >= tasks.size()) break;
        TensorRun& r = *runs[tasks[i].tensor];
        try {
          const ChunkBox b = chunk_box(r, tasks[i].chunk);
          const uint8_t* data = b.flat_count ? w.gather(r, b) : nullptr;
          if (stats_phase) r.chunk_stats[tasks[i].chunk] = w.stats(r, data, b.flat_count);
          else if (b.flat_count) {
            w.encode(r, data, b.flat_count, b.flat_begin);
            prefix.written(r.tensor->file, r.tensor->offset + row_nbytes(r.tensor->out, b.flat_begin));
          }
          w.release_consumed();
          if (r.chunks_left.fetch_sub(1) == 1) {
            // tensor complete: hand back whatever strided reads left resident
            for (const Part& p : r.tensor->parts) {
              if (numel(p.shape) == 0) continue;
              uint64_t span = 0;
              for (size_t d = 0; d < p.shape.size(); ++d) span += static_cast<uint64_t>((p.shape[d] - 1) * p.src_strides[d]);
              const SourceView& sv = views[p.source];
              sv.release(static_cast<uint64_t>(p.src_offset) / sv.unit_elems, (static_cast<uint64_t>(p.src_offset) + span) / sv.unit_elems + 1);
            }
          }
          done.fetch_add(r.tensor->nbytes * (b.flat_count) / std::max<uint64_t>(1, numel(r.tensor->shape)));
        } catch (const Error& e) {
          std::lock_guard<std::mutex> lock(err_mu);
          if (!error) error = Error(e).in_tensor(tasks[i].tensor);
          stop = true;
        } catch (const std::exception& e) {  // std::bad_alloc and the like
          std::lock_guard<std::mutex> lock(err_mu);
          if (!error) error = Error(e.what()).in_tensor(tasks[i].tensor);
          stop = true;
        }
      }
      if (running.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(mu);
        cv.notify_all();
      }
    };
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) pool.emplace_back(body);
    {
      std::unique_lock<std::mutex> lock(mu);
      while (running.load() > 0) {
        cv.wait_for(lock, std::chrono::milliseconds(100));
        if (progress && !stop.load()) {
          lock.unlock();
          const bool go_on = progress(done.load(), total, prefix.prefixes());
          lock.lock();
          if (!go_on) stop = true;
        }
      }
    }
    for (std::thread& th : pool) th.join();
  };

  std::vector<TensorReport> reports;
  run_phase(stat_tasks, true);
  if (!stop) {
    for (auto& rp : runs) {
      TensorRun& r = *rp;
      if (!r.needs_stats) continue;
      AbsStats st;
      for (const AbsStats& c : r.chunk_stats) merge(st, c);
      const uint64_t n = numel(r.tensor->shape);
      TensorReport rep;
      rep.tensor = static_cast<uint32_t>(r.tensor - plan.tensors.data());
      rep.mean_abs = n ? st.sum_abs / static_cast<double>(n) : 0.0;
      const bool single_magnitude = st.min_nonzero_abs == INFINITY || st.min_nonzero_abs == st.max_abs;
      float scale = st.max_abs;
      if (r.ternarize_op) {
        if (r.ternarize_op->keep_if_ternary && single_magnitude) {
          rep.already_ternary = true;
        } else {
          r.ternarize = true;
          rep.ternarized = true;
          r.s = 1.0f / std::max(static_cast<float>(rep.mean_abs), 1e-5f);
          // the largest |x| decides whether any code is non-zero; W' = ±1/s rounded as the model does
          const float mag = round_to_type(r.ternarize_op->round_to, 1.0f / r.s);
          r.magnitude = mag;
          scale = std::nearbyint(st.max_abs * r.s) >= 1.0f ? mag : 0.0f;
        }
      }
      rep.scale = scale;
      // the largest |x| the quantizer will see: the tensor's, or the ternary magnitude if any code is non-zero
      const DTypeTraits& out = traits(r.tensor->out);
      if (out.needs_stats()) r.quant = out.tensor_params(scale);
      reports.push_back(rep);
      r.chunk_stats.clear();
    }
    for (auto& rp : runs) {
      const DTypeTraits& out = traits(rp->tensor->out);
      if (!out.tail_bytes) continue;
      std::vector<uint8_t> tail(out.tail_bytes);
      out.write_tail(rp->quant, tail.data());
      const uint64_t at = rp->tensor->offset + rp->tensor->nbytes - out.tail_bytes;
      outs[rp->tensor->file]->write_at(tail.data(), tail.size(), at);
      prefix.written(rp->tensor->file, at);
    }
    for (auto& rp : runs) rp->chunks_left = rp->geo.count;  // the write pass counts chunks again
    run_phase(write_tasks, false);
  }
  if (error) throw *error;
  if (stop) throw Cancelled();
  if (progress) progress(total, total, prefix.prefixes());
  for (auto& o : outs) o->commit();
  return reports;
}

}  // namespace pyconv
