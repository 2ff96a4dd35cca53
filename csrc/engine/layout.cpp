#include "engine/layout.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "kernels/cast.h"
#include "kernels/gather.h"

namespace pyconv {
namespace {

constexpr uint64_t kMaxElements = uint64_t{1} << 48;

uint32_t index_of(const Plan& plan, const Tensor& t) { return static_cast<uint32_t>(&t - plan.tensors.data()); }

void append_u32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void append_u64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
void append_gguf_string(std::string& s, const std::string& v) {
  append_u64(s, v.size());
  s.append(v);
}

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

size_t gguf_scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::BOOL:
      return 1;
    case GgufType::U16:
    case GgufType::I16:
      return 2;
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::F32:
      return 4;
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::F64:
      return 8;
    default:
      return 0;
  }
}

void append_gguf_scalar(std::string& s, const GgufValue& v) {
  switch (v.type) {
    case GgufType::F32: {
      const float f = static_cast<float>(v.f);
      s.append(reinterpret_cast<const char*>(&f), 4);
      return;
    }
    case GgufType::F64:
      s.append(reinterpret_cast<const char*>(&v.f), 8);
      return;
    case GgufType::U64:
      append_u64(s, v.u);
      return;
    default: {
      // little-endian truncation of the integer to its width
      const size_t n = gguf_scalar_size(v.type);
      s.append(reinterpret_cast<const char*>(&v.i), n);
    }
  }
}

void append_gguf_value(std::string& s, const std::string& key, const GgufValue& v) {
  append_u32(s, static_cast<uint32_t>(v.type));
  if (v.type == GgufType::STRING) {
    append_gguf_string(s, v.s);
  } else if (v.type == GgufType::ARRAY) {
    append_u32(s, static_cast<uint32_t>(v.elem));
    append_u64(s, v.count);
    if (v.elem == GgufType::STRING) {
      if (v.strings.size() != v.count) throw Error("gguf key '" + key + "': string array length mismatch");
      for (const std::string& e : v.strings) append_gguf_string(s, e);
    } else {
      const size_t es = gguf_scalar_size(v.elem);
      if (es == 0) throw Error("gguf key '" + key + "': unsupported array element type");
      if (v.raw.size() != es * v.count) throw Error("gguf key '" + key + "': array byte size mismatch");
      s.append(v.raw);
    }
  } else {
    if (gguf_scalar_size(v.type) == 0) throw Error("gguf key '" + key + "': unsupported value type");
    append_gguf_scalar(s, v);
  }
}

// Plan values are untrusted: a bound summed in wrapping arithmetic would pass a part whose reads
// reach far outside the maps. These report whether the exact result overflows 64 bits.
bool add_overflows(uint64_t a, uint64_t b, uint64_t* sum) { return __builtin_add_overflow(a, b, sum); }
bool mul_overflows(uint64_t a, uint64_t b, uint64_t* product) { return __builtin_mul_overflow(a, b, product); }

std::string json_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size() + 2);
  for (unsigned char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          o += buf;
        } else {
          o += static_cast<char>(c);
        }
    }
  }
  return o;
}

std::string safetensors_name(const Plan& plan, const Tensor& t) {
  const DTypeTraits& tr = traits(t.out);
  if (!tr.safetensors_name) throw Error(std::string("safetensors cannot store ") + tr.name).in_tensor(index_of(plan, t));
  return tr.safetensors_name;
}

void check_box(const Tensor& t, const Part& p, size_t pi, const Source& src) {
  const size_t nd = t.layout.size();
  const std::string part = "part " + std::to_string(pi);
  if (p.shape.size() != nd || p.dst_start.size() != nd || p.src_strides.size() != nd)
    throw Error(part + " has " + std::to_string(p.shape.size()) + " dims, the layout has " + std::to_string(nd));
  if (p.src_offset < 0) throw Error(part + " has a negative source offset");
  bool empty = false;
  bool wraps = false;
  uint64_t max_src = static_cast<uint64_t>(p.src_offset);
  for (size_t d = 0; d < nd; ++d) {
    if (p.shape[d] < 0 || p.dst_start[d] < 0 || p.src_strides[d] < 0)
      throw Error(part + " has a negative extent, start or stride");
    if (p.dst_start[d] > t.layout[d] || p.shape[d] > t.layout[d] - p.dst_start[d])
      throw Error(part + " reaches past the tensor along dim " + std::to_string(d));
    uint64_t reach = 0;
    if (p.shape[d] == 0) empty = true;
    else wraps = wraps || mul_overflows(static_cast<uint64_t>(p.shape[d] - 1), static_cast<uint64_t>(p.src_strides[d]), &reach) ||
                 add_overflows(max_src, reach, &max_src);
  }
  const DTypeTraits& tr = traits(src.dtype);
  uint64_t src_elems = 0;
  for (uint64_t bytes : block_bytes_per_segment(src)) src_elems += bytes / tr.block_bytes * tr.block_elems;
  if (!empty && wraps) throw Error(part + " reads past its source: its strides reach beyond 2^64 elements");
  if (!empty && max_src >= src_elems)
    throw Error(part + " reads element " + std::to_string(max_src) + " of a source with " + std::to_string(src_elems));
  if (tr.is_block() && !empty) {
    // Block sources move and decode whole rows of blocks along contiguous runs.
    const int64_t row = tr.row_elems;
    if (p.src_strides[nd - 1] != 1 || p.shape[nd - 1] % row != 0 || p.src_offset % row != 0 || p.dst_start[nd - 1] % row != 0)
      throw Error("a " + std::string(tr.name) + " source can only be read in whole contiguous blocks");
    for (size_t d = 0; d + 1 < nd; ++d)
      if (p.src_strides[d] % row != 0) throw Error("a " + std::string(tr.name) + " source row does not start on a block");
  }
}


// Every rule one output tensor must follow; throws Error (the caller adds the tensor's index).
void check_tensor(const Plan& plan, const Tensor& t) {
  if (t.file >= plan.files.size()) throw Error("output file index out of range");
  if (t.layout.empty() || t.layout.size() > static_cast<size_t>(kMaxDims))
    throw Error("layout needs 1 to " + std::to_string(kMaxDims) + " dims");
  if (numel(t.shape) != numel(t.layout)) throw Error("layout and shape hold different element counts");
  const DTypeTraits& out = traits(t.out);
  const uint64_t ne0 = t.shape.empty() ? 1 : static_cast<uint64_t>(t.shape.back());
  if (ne0 % out.row_elems != 0)
    throw Error("rows of " + std::to_string(ne0) + " elements do not fit " + out.name + " blocks");
  if (out.dims != 0 && t.shape.size() != out.dims)
    throw Error(std::string(out.name) + " needs a " + std::to_string(out.dims) + "-d tensor");
  if (!t.importance.empty()) {
    const uint64_t rows = t.shape.size() > 1 ? static_cast<uint64_t>(t.shape[t.shape.size() - 2]) : 1;
    if (!out.is_block() || t.importance.size() != numel(t.shape) / rows)
      throw Error("importance needs a quantized type and one row of " + std::to_string(ne0) + " values per matrix, got " +
                  std::to_string(t.importance.size()) + " values");
  }
  // Blocks of the output type copied as they are need no kernel; anything else is decoded and
  // quantized. A type with a tail is always re-quantized: its per-tensor state is made afresh.
  bool raw_copy = t.ops.empty() && !t.parts.empty() && out.tail_bytes == 0;
  for (const Part& p : t.parts)
    raw_copy = raw_copy && p.field.bits == 0 && p.source < plan.sources.size() && plan.sources[p.source].dtype == t.out &&
               plan.sources[p.source].scale.source < 0 && plan.sources[p.source].updates.empty();
  if (out.is_block() && !raw_copy && !out.quantize && !packs(plan, t))
    throw Error(std::string("pyconv cannot quantize to ") + out.name);
  if (out.is_float() && !raw_copy && !cast_writes(t.out))
    throw Error(std::string("pyconv cannot write ") + out.name + " values; it only copies " + out.name + " data as it is");
  if (out.kind == TypeKind::Plain) {  // integers and bools are never converted
    if (!t.ops.empty()) throw Error(std::string("a ") + out.name + " tensor takes no operations");
    for (const Part& p : t.parts)
      if (p.field.bits != 0 || p.source >= plan.sources.size() || plan.sources[p.source].dtype != t.out ||
          plan.sources[p.source].scale.source >= 0 || !plan.sources[p.source].updates.empty())
        throw Error(std::string("a ") + out.name + " tensor is copied from " + out.name + " data only");
  }
  bool float_like_sources = true;
  for (size_t i = 0; i < t.parts.size(); ++i) {
    const Part& p = t.parts[i];
    if (p.source >= plan.sources.size()) throw Error("part names a missing source");
    const Source& src = plan.sources[p.source];
    check_box(t, p, i, src);
    const DTypeTraits& st = traits(src.dtype);
    if (st.is_block() && !raw_copy && !st.dequantize) throw Error(std::string("pyconv cannot decode ") + st.name + " data");
    if (p.field.bits != 0) {  // decoded to floats
      if (src.dtype != DType::U8 || p.field.bits > 8 || p.field.shift + p.field.bits > 8)
        throw Error("part " + std::to_string(i) + " reads " + std::to_string(p.field.bits) + "-bit fields at bit " +
                    std::to_string(p.field.shift) + " of " + st.name + " elements; bit fields come from u8 bytes");
      if (out.kind == TypeKind::Plain) throw Error(std::string("bit fields decode to floats, not ") + out.name);
    } else if (src.scale.source >= 0 || !src.updates.empty()) {  // decoded to floats
      if (out.kind == TypeKind::Plain) throw Error(std::string("scaled sources decode to floats, not ") + out.name);
    } else if (st.kind == TypeKind::Plain) {
      float_like_sources = false;
      if (src.dtype != t.out || !t.ops.empty())
        throw Error(std::string(st.name) + " data can only be copied as it is, not turned into " + out.name);
    }
  }
  if (!float_like_sources) {
    for (const Part& p : t.parts)
      if (p.field.bits != 0 || plan.sources[p.source].dtype != t.out)
        throw Error("parts of different integer types cannot be combined");
  }
  for (const Op& op : t.ops) {
    if (op.kind == OpKind::TernarizeAbsmean && &op != &t.ops.back())
      throw Error("absmean ternarization must be the last operation");
    if (op.kind == OpKind::TernarizeAbsmean && !traits(op.round_to).is_float())
      throw Error(std::string("absmean ternarization rounds to a float type, not ") + traits(op.round_to).name);
  }
  // Parts of a tensor must not overlap: each output element has one writer.
  for (size_t a = 0; a < t.parts.size(); ++a)
    for (size_t b = a + 1; b < t.parts.size(); ++b) {
      bool overlap = true;
      for (size_t d = 0; d < t.layout.size() && overlap; ++d) {
        const int64_t lo = std::max(t.parts[a].dst_start[d], t.parts[b].dst_start[d]);
        const int64_t hi = std::min(t.parts[a].dst_start[d] + t.parts[a].shape[d], t.parts[b].dst_start[d] + t.parts[b].shape[d]);
        overlap = lo < hi;
      }
      if (overlap) throw Error("parts " + std::to_string(a) + " and " + std::to_string(b) + " overlap");
    }
}


}  // namespace

bool packs(const Plan& plan, const Tensor& t) {
  const DTypeTraits& out = traits(t.out);
  if (!out.pack || !t.ops.empty() || t.parts.empty() || t.layout.empty()) return false;
  const int64_t be = out.block_elems;
  uint64_t covered = 0;
  for (const Part& p : t.parts) {
    if (p.source >= plan.sources.size() || p.field.bits != 0 || p.shape.size() != t.layout.size()) return false;
    const Source& s = plan.sources[p.source];
    const Scale& sc = s.scale;
    if (s.dtype != out.pack_codes || sc.source < 0 || !s.updates.empty() || static_cast<uint64_t>(sc.source) >= plan.sources.size() ||
        plan.sources[static_cast<size_t>(sc.source)].dtype != out.pack_scales || sc.shape.empty() ||
        sc.block.size() != sc.shape.size() || sc.block.back() != be || sc.shape.back() % be != 0)
      return false;
    for (size_t d = 0; d + 1 < sc.block.size(); ++d)
      if (sc.block[d] != 1) return false;
    // whole blocks along the rows, on both sides
    const size_t last = p.shape.size() - 1;
    if (p.src_strides[last] != 1 || p.shape[last] % be != 0 || p.src_offset % be != 0 || p.dst_start[last] % be != 0)
      return false;
    for (size_t d = 0; d < last; ++d)
      if (p.src_strides[d] % be != 0) return false;
    covered += numel(p.shape);
  }
  return t.layout.back() % be == 0 && covered == numel(t.layout);
}

uint64_t numel(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error("negative dimension");
    if (d != 0 && n > kMaxElements / static_cast<uint64_t>(d)) throw Error("tensor too large");
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

std::vector<uint64_t> block_bytes_per_segment(const Source& s) {
  const DTypeTraits& tr = traits(s.dtype);
  uint64_t total = 0;
  for (const Segment& seg : s.segments)
    if (add_overflows(total, seg.nbytes, &total)) throw Error("a source's segments add up to more than 2^64 bytes");
  if (total < tr.tail_bytes)
    throw Error("a " + std::string(tr.name) + " source of " + std::to_string(total) + " bytes is shorter than its " +
                std::to_string(tr.tail_bytes) + "-byte tail");
  uint64_t left = total - tr.tail_bytes;
  // Block types are decoded a row of blocks at a time, so segments end on rows of blocks.
  const uint64_t unit = tr.row_elems / tr.block_elems * tr.block_bytes;
  std::vector<uint64_t> out;
  for (const Segment& seg : s.segments) {
    const uint64_t mine = std::min(seg.nbytes, left);
    if (mine % unit != 0) throw Error("a source segment is not a whole number of " + std::string(tr.name) + " blocks");
    out.push_back(mine);
    left -= mine;
  }
  return out;
}


namespace {

uint64_t source_elems(const Source& s) {
  const DTypeTraits& tr = traits(s.dtype);
  uint64_t n = 0;
  for (uint64_t bytes : block_bytes_per_segment(s)) n += bytes / tr.block_bytes * tr.block_elems;
  return n;
}

// A scale names a float source of one element per block, blocks tiling the scaled source's shape.
void check_scale(const Plan& plan, const Source& s) {
  const Scale& sc = s.scale;
  if (sc.source < 0) return;
  if (static_cast<uint64_t>(sc.source) >= plan.sources.size()) throw Error("a source's scale names a missing source");
  const Source& by = plan.sources[static_cast<size_t>(sc.source)];
  if (!traits(by.dtype).is_float() || by.scale.source >= 0)
    throw Error(std::string("a scale is a float source holding plain values, not ") + traits(by.dtype).name + " data");
  const DTypeTraits& tr = traits(s.dtype);
  if ((tr.is_block() && (!tr.dequantize || tr.tail_bytes)) || (tr.kind == TypeKind::Plain && s.dtype != DType::I8 && s.dtype != DType::U8))
    throw Error(std::string("a scale applies to float, 8-bit integer or decodable block codes, not ") + tr.name + " data");
  if (sc.shape.empty() || sc.shape.size() > static_cast<size_t>(kMaxDims) || sc.block.size() != sc.shape.size())
    throw Error("a scale needs a shape of 1 to " + std::to_string(kMaxDims) + " dims and a block size per dim");
  uint64_t scales = 1;
  for (size_t d = 0; d < sc.shape.size(); ++d) {
    if (sc.shape[d] < 0 || sc.block[d] < 1) throw Error("a scale's shape is negative or its block empty");
    scales *= static_cast<uint64_t>((sc.shape[d] + sc.block[d] - 1) / sc.block[d]);
  }
  if (numel(sc.shape) != source_elems(s))
    throw Error("a scaled source of " + std::to_string(source_elems(s)) + " elements does not have its scale's shape");
  if (scales != source_elems(by))
    throw Error("the scale of a source has " + std::to_string(source_elems(by)) + " elements, its blocks need " +
                std::to_string(scales));
}

// An update's factors are float sources of plain values, A [rank, cols] and B [rows, rank], of a
// float (or scaled) source of rows * cols elements.
void check_updates(const Plan& plan, const Source& s) {
  for (const LowRank& lr : s.updates) {
    if (lr.rows < 1 || lr.cols < 1 || lr.rank < 1) throw Error("a low-rank update needs positive rows, columns and rank");
    if (source_elems(s) != static_cast<uint64_t>(lr.rows * lr.cols))
      throw Error("an updated source of " + std::to_string(source_elems(s)) + " elements is not " + std::to_string(lr.rows) +
                  " x " + std::to_string(lr.cols));
    const DTypeTraits& tr = traits(s.dtype);
    if (!tr.is_float() && s.scale.source < 0)
      throw Error(std::string("a low-rank update applies to float values, not ") + tr.name + " data");
    for (auto [index, want] : {std::pair{lr.a, lr.rank * lr.cols}, std::pair{lr.b, lr.rows * lr.rank}}) {
      if (index < 0 || static_cast<uint64_t>(index) >= plan.sources.size())
        throw Error("a low-rank update names a missing source");
      const Source& f = plan.sources[static_cast<size_t>(index)];
      if (!traits(f.dtype).is_float() || traits(f.dtype).is_block() || f.scale.source >= 0 || !f.updates.empty())
        throw Error(std::string("a low-rank factor is a float source of plain values, not ") + traits(f.dtype).name + " data");
      if (source_elems(f) != static_cast<uint64_t>(want))
        throw Error("a low-rank factor of " + std::to_string(source_elems(f)) + " elements, its shape needs " +
                    std::to_string(want));
    }
  }
}

}  // namespace

void validate(const Plan& plan) {
  for (const Source& s : plan.sources) {
    for (const Segment& seg : s.segments)
      if (seg.file >= plan.inputs.size()) throw Error("a source segment names input " + std::to_string(seg.file) + " which does not exist");
    block_bytes_per_segment(s);
    check_scale(plan, s);
    check_updates(plan, s);
  }
  for (uint32_t i = 0; i < plan.tensors.size(); ++i) {
    try {
      check_tensor(plan, plan.tensors[i]);
    } catch (Error& e) {
      e.in_tensor(i);
      throw;
    }
  }
}

void layout(Plan& plan) {
  validate(plan);
  for (Tensor& t : plan.tensors) t.nbytes = tensor_nbytes(t.out, numel(t.shape));
  for (size_t fi = 0; fi < plan.files.size(); ++fi) {
    OutputFileSpec& f = plan.files[fi];
    // Errors here concern this file (and maybe one of its tensors).
    try {
      std::vector<Tensor*> mine;
      for (Tensor& t : plan.tensors)
        if (t.file == fi) mine.push_back(&t);
      if (f.container == Container::Raw) {
        for (const Tensor* t : mine)
          if (t->offset > f.size || t->nbytes > f.size - t->offset)
            throw Error("it ends past the file size").in_tensor(index_of(plan, *t));
        for (const auto& blob : f.blobs)
          if (blob.first > f.size || blob.second.size() > f.size - blob.first)
            throw Error("a header blob ends past the file size");
        continue;
      }
      if (f.container == Container::Safetensors) {
        std::string json = "{";
        bool first = true;
        if (!f.metadata.empty()) {
          json += "\"__metadata__\":{";
          for (size_t i = 0; i < f.metadata.size(); ++i) {
            if (i) json += ",";
            json += "\"" + json_escape(f.metadata[i].first) + "\":\"" + json_escape(f.metadata[i].second) + "\"";
          }
          json += "}";
          first = false;
        }
        uint64_t pos = 0;
        for (const Tensor* t : mine) {
          if (!first) json += ",";
          first = false;
          json += "\"" + json_escape(t->name) + "\":{\"dtype\":\"" + safetensors_name(plan, *t) + "\",\"shape\":[";
          for (size_t d = 0; d < t->shape.size(); ++d) json += (d ? "," : "") + std::to_string(t->shape[d]);
          json += "],\"data_offsets\":[" + std::to_string(pos) + "," + std::to_string(pos + t->nbytes) + "]}";
          pos += t->nbytes;
        }
        json += "}";
        json.append((8 - json.size() % 8) % 8, ' ');  // data starts 8-byte aligned
        std::string header;
        append_u64(header, json.size());
        header += json;
        uint64_t data = header.size();
        for (Tensor* t : mine) {
          t->offset = data;
          data += t->nbytes;
        }
        f.blobs = {{0, header}};
        f.size = data;
        continue;
      }
      // GGUF v3: magic, version, counts, KVs, tensor infos, padding to the alignment, data.
      if (f.alignment == 0 || (f.alignment & (f.alignment - 1)) != 0)
        throw Error("gguf alignment must be a power of two");
      std::string h = "GGUF";
      append_u32(h, 3);
      append_u64(h, mine.size());
      append_u64(h, f.kvs.size());
      for (const GgufKV& kv : f.kvs) {
        append_gguf_string(h, kv.key);
        append_gguf_value(h, kv.key, kv.value);
      }
      uint64_t rel = 0;
      for (Tensor* t : mine) {
        append_gguf_string(h, t->name);
        append_u32(h, static_cast<uint32_t>(t->shape.empty() ? 1 : t->shape.size()));
        if (t->shape.empty()) append_u64(h, 1);
        for (size_t d = t->shape.size(); d-- > 0;) append_u64(h, static_cast<uint64_t>(t->shape[d]));
        const int32_t ggml_id = traits(t->out).ggml_id;
        if (ggml_id < 0)
          throw Error(std::string("gguf cannot store ") + traits(t->out).name).in_tensor(index_of(plan, *t));
        append_u32(h, static_cast<uint32_t>(ggml_id));
        append_u64(h, rel);
        t->offset = rel;  // made absolute below
        rel = align_up(rel + t->nbytes, f.alignment);
      }
      const uint64_t data = align_up(h.size(), f.alignment);
      h.append(data - h.size(), '\0');
      for (Tensor* t : mine) t->offset += data;
      f.blobs = {{0, h}};
      f.size = data + rel;
    } catch (Error& e) {
      e.in_file(f.path);
      throw;
    }
  }
}

}  // namespace pyconv
