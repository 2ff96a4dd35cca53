// pyconv._core: converts Python values to the core's structs and back, releases the GIL while the
// engine runs, and maps core errors to one Python exception. Nothing else lives here.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cctype>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "engine/executor.h"
#include "engine/layout.h"
#include "kernels/cast.h"
#include "kernels/quant.h"

namespace py = pybind11;
using namespace pyconv;

namespace {

using FieldTuple = std::tuple<uint32_t, uint32_t, float, float>;  // bits, shift, offset, scale
using PartTuple =
    std::tuple<uint32_t, int64_t, std::vector<int64_t>, std::vector<int64_t>, std::vector<int64_t>, FieldTuple>;
using OpTuple = std::tuple<std::string, double, bool, std::string>;

OpKind op_kind(const std::string& name) {
  if (name == "add") return OpKind::AddScalar;
  if (name == "ternarize_absmean") return OpKind::TernarizeAbsmean;
  throw Error("unknown tensor op '" + name + "'");
}

// Packs a sequence of Python numbers as little-endian elements of a GGUF numeric type.
std::string pack_numbers(GgufType t, const py::sequence& values) {
  std::string raw;
  for (const py::handle& h : values) {
    switch (t) {
      case GgufType::F32: {
        const float f = h.cast<float>();
        raw.append(reinterpret_cast<const char*>(&f), 4);
        break;
      }
      case GgufType::F64: {
        const double f = h.cast<double>();
        raw.append(reinterpret_cast<const char*>(&f), 8);
        break;
      }
      case GgufType::U64: {
        const uint64_t v = h.cast<uint64_t>();
        raw.append(reinterpret_cast<const char*>(&v), 8);
        break;
      }
      case GgufType::U8: case GgufType::I8: case GgufType::BOOL: case GgufType::U16: case GgufType::I16:
      case GgufType::U32: case GgufType::I32: case GgufType::I64: {
        const int64_t v = h.cast<int64_t>();
        const size_t n = t == GgufType::I64 ? 8 : (t == GgufType::U32 || t == GgufType::I32) ? 4
                         : (t == GgufType::U16 || t == GgufType::I16) ? 2 : 1;
        raw.append(reinterpret_cast<const char*>(&v), n);
        break;
      }
      default:
        throw Error("unsupported gguf array element type");
    }
  }
  return raw;
}

GgufValue gguf_value(uint32_t type, const py::handle& value) {
  GgufValue v;
  v.type = static_cast<GgufType>(type);
  switch (v.type) {
    case GgufType::STRING: v.s = value.cast<std::string>(); break;
    case GgufType::F32: case GgufType::F64: v.f = value.cast<double>(); break;
    case GgufType::U64: v.u = value.cast<uint64_t>(); break;
    case GgufType::BOOL: v.i = value.cast<bool>() ? 1 : 0; break;
    case GgufType::ARRAY: {
      auto pair = value.cast<std::tuple<uint32_t, py::object>>();
      v.elem = static_cast<GgufType>(std::get<0>(pair));
      py::object items = std::get<1>(pair);
      if (py::isinstance<py::bytes>(items)) {  // numbers already packed by numpy
        v.raw = items.cast<std::string>();
        const size_t es = v.elem == GgufType::F64 || v.elem == GgufType::U64 || v.elem == GgufType::I64 ? 8
                          : v.elem == GgufType::F32 || v.elem == GgufType::U32 || v.elem == GgufType::I32 ? 4
                          : v.elem == GgufType::U16 || v.elem == GgufType::I16 ? 2 : 1;
        v.count = v.raw.size() / es;
      } else if (v.elem == GgufType::STRING) {
        v.strings = items.cast<std::vector<std::string>>();
        v.count = v.strings.size();
      } else {
        py::sequence seq = items.cast<py::sequence>();
        v.raw = pack_numbers(v.elem, seq);
        v.count = py::len(seq);
      }
      break;
    }
    default: v.i = value.cast<int64_t>();
  }
  return v;
}

// The bytes of a buffer that holds its elements in one C-contiguous run (size x itemsize bytes from
// its pointer); any other buffer has gaps or another order, and is refused.
struct ContiguousBytes {
  py::buffer_info info;
  const uint8_t* data;
  size_t size;
};
ContiguousBytes contiguous_bytes(const py::buffer& b, const char* api) {
  py::buffer_info info = b.request();
  py::ssize_t expect = info.itemsize;
  for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
    if (info.shape[d] > 1 && info.strides[d] != expect)
      throw Error(std::string(api) + ": the data must be one contiguous buffer");
    expect *= info.shape[d];
  }
  const auto* data = static_cast<const uint8_t*>(info.ptr);
  const size_t size = static_cast<size_t>(info.size * info.itemsize);
  return {std::move(info), data, size};
}

class PyPlan {
 public:
  uint32_t add_input(const std::string& path) {
    plan_.inputs.push_back(path);
    return static_cast<uint32_t>(plan_.inputs.size() - 1);
  }
  uint32_t add_source(const std::string& dtype, const std::vector<std::tuple<uint32_t, uint64_t, uint64_t>>& segments) {
    Source s;
    s.dtype = dtype_from_name(dtype);
    for (const auto& [file, offset, nbytes] : segments) s.segments.push_back({file, offset, nbytes});
    plan_.sources.push_back(std::move(s));
    return static_cast<uint32_t>(plan_.sources.size() - 1);
  }
  uint32_t add_tensor(const std::string& name, const std::vector<int64_t>& shape, const std::vector<int64_t>& layout,
                      const std::string& out, uint32_t file, const std::vector<PartTuple>& parts,
                      const std::vector<OpTuple>& ops, uint64_t offset) {
    Tensor t;
    t.name = name;
    t.shape = shape;
    t.layout = layout;
    t.out = dtype_from_name(out);
    t.file = file;
    t.offset = offset;
    for (const auto& [source, src_offset, src_strides, dst_start, pshape, field] : parts) {
      const auto& [bits, shift, offset_, scale] = field;
      t.parts.push_back({source, src_offset, src_strides, dst_start, pshape, {bits, shift, offset_, scale}});
    }
    for (const auto& [kind, value, keep, round_to] : ops) t.ops.push_back({op_kind(kind), value, keep, dtype_from_name(round_to)});
    plan_.tensors.push_back(std::move(t));
    return static_cast<uint32_t>(plan_.tensors.size() - 1);
  }
  uint32_t add_safetensors_file(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) {
    OutputFileSpec f;
    f.path = path;
    f.container = Container::Safetensors;
    f.metadata = metadata;
    plan_.files.push_back(std::move(f));
    return static_cast<uint32_t>(plan_.files.size() - 1);
  }
  uint32_t add_gguf_file(const std::string& path, const py::list& kvs, uint32_t alignment) {
    OutputFileSpec f;
    f.path = path;
    f.container = Container::Gguf;
    f.alignment = alignment;
    for (const py::handle& h : kvs) {
      auto kv = h.cast<std::tuple<std::string, uint32_t, py::object>>();
      f.kvs.push_back({std::get<0>(kv), gguf_value(std::get<1>(kv), std::get<2>(kv))});
    }
    plan_.files.push_back(std::move(f));
    return static_cast<uint32_t>(plan_.files.size() - 1);
  }
  uint32_t add_raw_file(const std::string& path, uint64_t size, const std::vector<std::pair<uint64_t, py::bytes>>& blobs) {
    OutputFileSpec f;
    f.path = path;
    f.container = Container::Raw;
    f.size = size;
    for (const auto& [offset, data] : blobs) f.blobs.push_back({offset, std::string(data)});
    plan_.files.push_back(std::move(f));
    return static_cast<uint32_t>(plan_.files.size() - 1);
  }
  void do_layout() { layout(plan_); }
  std::vector<std::pair<uint64_t, uint64_t>> tensor_spans() const {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for (const Tensor& t : plan_.tensors) out.emplace_back(t.offset, t.nbytes);
    return out;
  }
  std::vector<uint64_t> file_sizes() const {
    std::vector<uint64_t> out;
    for (const OutputFileSpec& f : plan_.files) out.push_back(f.size);
    return out;
  }
  py::list execute(int threads, uint64_t chunk_bytes, const py::object& progress) {
    ExecOptions opt;
    opt.threads = threads;
    opt.chunk_bytes = chunk_bytes;
    std::unique_ptr<py::error_already_set> pending;
    ProgressFn fn;
    if (!progress.is_none()) {
      fn = [&](uint64_t done, uint64_t total, const std::vector<uint64_t>& prefixes) {
        py::gil_scoped_acquire gil;
        if (pending) return false;
        try {
          if (PyErr_CheckSignals() != 0) throw py::error_already_set();
          progress(done, total, prefixes);
          return true;
        } catch (py::error_already_set& e) {
          pending = std::make_unique<py::error_already_set>(std::move(e));
          return false;
        }
      };
    }
    std::vector<TensorReport> reports;
    try {
      py::gil_scoped_release release;
      reports = pyconv::execute(plan_, opt, fn);
    } catch (const Cancelled&) {
      if (pending) throw std::move(*pending);
      throw;
    }
    py::list out;
    for (const TensorReport& r : reports) {
      py::dict d;
      d["name"] = r.name;
      d["ternarized"] = r.ternarized;
      d["already_ternary"] = r.already_ternary;
      d["scale"] = r.scale;
      d["mean_abs"] = r.mean_abs;
      out.append(d);
    }
    return out;
  }

 private:
  Plan plan_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyconv's C++ engine: plans run on memory-mapped inputs, cast and quantization kernels.";

  static py::exception<Error> core_error(m, "CoreError", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Cancelled& e) {
      PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
    } catch (const Error& e) {
      py::set_error(core_error, e.what());
    }
  });

  py::enum_<DType> dtype(m, "DType", "Element and block type ids (ggml's ids for ggml types).");
  for (const DTypeTraits* row : all_types()) {
    std::string upper = row->name;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    dtype.value(upper.c_str(), row->id);
  }
  // Python code names types by their lower-case names; where a DType is expected, a name will do.
  dtype.def(py::init([](const std::string& name) { return dtype_from_name(name); }), py::arg("name"));
  py::implicitly_convertible<py::str, DType>();

  py::enum_<TypeKind>(m, "TypeKind", "How a type's elements are stored: converted floats, plain values, or blocks.")
      .value("FLOAT", TypeKind::Float)
      .value("PLAIN", TypeKind::Plain)
      .value("BLOCK", TypeKind::Block);

  const auto optional_int = [](int32_t v) { return v < 0 ? py::object(py::none()) : py::object(py::int_(v)); };
  const auto optional_str = [](const char* s) { return s ? py::object(py::str(s)) : py::object(py::none()); };
  py::class_<DTypeTraits>(m, "TypeInfo", "One row of the type table (csrc/core/dtype.h says what each field means).")
      .def_readonly("id", &DTypeTraits::id)
      .def_property_readonly("name", [](const DTypeTraits& t) { return std::string(t.name); })
      .def_readonly("kind", &DTypeTraits::kind)
      .def_property_readonly("ggml_id", [=](const DTypeTraits& t) { return optional_int(t.ggml_id); })
      .def_readonly("block_elems", &DTypeTraits::block_elems)
      .def_readonly("block_bytes", &DTypeTraits::block_bytes)
      .def_readonly("row_elems", &DTypeTraits::row_elems)
      .def_readonly("tail_bytes", &DTypeTraits::tail_bytes)
      .def_readonly("dims", &DTypeTraits::dims)
      .def_property_readonly("can_quantize", [](const DTypeTraits& t) { return t.quantize != nullptr; })
      .def_property_readonly("can_dequantize", [](const DTypeTraits& t) { return t.dequantize != nullptr; })
      .def_property_readonly("needs_stats", &DTypeTraits::needs_stats)
      .def_property_readonly("safetensors_name", [=](const DTypeTraits& t) { return optional_str(t.safetensors_name); })
      .def_property_readonly("buffer_format", [=](const DTypeTraits& t) { return optional_str(t.buffer_format); })
      .def_readonly("ternary", &DTypeTraits::ternary)
      .def_readonly("mainline", &DTypeTraits::mainline)
      .def_property_readonly("file_type", [=](const DTypeTraits& t) { return optional_int(t.file_type); })
      .def("__repr__", [](const DTypeTraits& t) { return std::string("<TypeInfo ") + t.name + ">"; });
  m.def("types", &all_types, py::return_value_policy::reference,
        "Every row of the type table: the built-in ones, then those registered from C++.");
  m.def("tensor_nbytes", &tensor_nbytes, py::arg("dtype"), py::arg("numel"),
        "Bytes a tensor of `numel` elements takes when stored as `dtype` (its blocks and its tail).");

  m.def("simd_level", &simd_level, "The kernel set in use: 'avx2' or 'scalar'.");
  m.def("set_simd_enabled", &set_simd_enabled, py::arg("enabled"), "Force the scalar kernels (False) or allow SIMD.");
  m.def("default_threads", &default_threads);

  m.def("cast", [](const py::buffer& src, DType from, DType to) {
    const ContiguousBytes in = contiguous_bytes(src, "cast");
    const size_t elem = traits(from).block_bytes;
    if (in.size % elem != 0)
      throw Error("cast: " + std::to_string(in.size) + " bytes are not a whole number of " + traits(from).name + " elements");
    const size_t n = in.size / elem;
    py::bytes out(nullptr, n * traits(to).block_bytes);  // filled in place
    cast(from, in.data, to, PyBytes_AsString(out.ptr()), n);
    return out;
  }, py::arg("data"), py::arg("from_dtype"), py::arg("to_dtype"), "Convert raw elements between f64/f32/f16/bf16.");

  py::class_<QuantParams>(m, "QuantParams", "Per-tensor values a type's kernels use (a tensor's scale).")
      .def(py::init<>())
      .def_readwrite("tensor_scale", &QuantParams::tensor_scale);

  m.def("quantize", [](const py::array_t<float, py::array::c_style | py::array::forcecast>& src, DType type) {
    const size_t n = static_cast<size_t>(src.size());
    const size_t per_row = src.ndim() ? static_cast<size_t>(src.shape(src.ndim() - 1)) : n;
    py::bytes out(nullptr, static_cast<size_t>(tensor_nbytes(type, n)));  // filled in place: no zeroing, no copy
    auto* dst = reinterpret_cast<uint8_t*>(PyBytes_AsString(out.ptr()));
    {
      py::gil_scoped_release release;
      quantize_tensor(type, src.data(), dst, per_row ? n / per_row : 0, per_row);
    }
    return out;
  }, py::arg("data"), py::arg("dtype"),
     "A whole tensor (rows along its last dimension) as `dtype` stores it: its blocks, then the type's tail.");
  m.def("dequantize", [](const py::buffer& src, DType type, size_t n) {
    const ContiguousBytes in = contiguous_bytes(src, "dequantize");
    if (in.size < tensor_nbytes(type, n)) throw Error("dequantize: not enough bytes for " + std::to_string(n) + " elements");
    py::array_t<float> out(static_cast<py::ssize_t>(n));
    float* dst = out.mutable_data();
    {
      py::gil_scoped_release release;
      dequantize_tensor(type, in.data, dst, n);
    }
    return out;
  }, py::arg("data"), py::arg("dtype"), py::arg("numel"),
     "Decode a whole tensor of `numel` elements, stored as `dtype` (blocks, then the tail), into f32.");
  m.def("dequantize_blocks", [](const py::buffer& src, DType type, size_t n, const QuantParams& params) {
    const ContiguousBytes in = contiguous_bytes(src, "dequantize_blocks");
    if (in.size < row_nbytes(type, n)) throw Error("dequantize_blocks: not enough bytes for " + std::to_string(n) + " elements");
    py::array_t<float> out(static_cast<py::ssize_t>(n));
    float* dst = out.mutable_data();
    {
      py::gil_scoped_release release;
      dequantize(type, in.data, dst, n, params);
    }
    return out;
  }, py::arg("data"), py::arg("dtype"), py::arg("numel"), py::arg("params") = QuantParams{},
     "Decode `numel` elements of a tensor's blocks (a part of them: the tensor's parameters are given) into f32.");
  m.def("tensor_params", [](const py::buffer& src, DType type, size_t n) {
    const ContiguousBytes in = contiguous_bytes(src, "tensor_params");
    if (in.size < tensor_nbytes(type, n)) throw Error("tensor_params: not enough bytes for " + std::to_string(n) + " elements");
    return tensor_params_from_tail(type, in.data, n);
  }, py::arg("data"), py::arg("dtype"), py::arg("numel"), "The parameters in the tail of a whole tensor (defaults without a tail).");
  m.def("invalid_codes", [](const py::buffer& src, DType type, size_t n) {
    const ContiguousBytes in = contiguous_bytes(src, "invalid_codes");
    if (in.size < row_nbytes(type, n)) throw Error("invalid_codes: not enough bytes for " + std::to_string(n) + " elements");
    py::gil_scoped_release release;
    return invalid_codes(type, in.data, n);
  }, py::arg("data"), py::arg("dtype"), py::arg("numel"),
     "How many codes in `numel` elements of blocks the type's quantizer never writes (0 for types without such codes).");

  py::class_<PyPlan>(m, "Plan", "A conversion plan in the engine's terms; built by pyconv.engine.")
      .def(py::init<>())
      .def("add_input", &PyPlan::add_input, py::arg("path"))
      .def("add_source", &PyPlan::add_source, py::arg("dtype"), py::arg("segments"))
      .def("add_tensor", &PyPlan::add_tensor, py::arg("name"), py::arg("shape"), py::arg("layout"), py::arg("out"),
           py::arg("file"), py::arg("parts"), py::arg("ops"), py::arg("offset") = 0)
      .def("add_safetensors_file", &PyPlan::add_safetensors_file, py::arg("path"), py::arg("metadata"))
      .def("add_gguf_file", &PyPlan::add_gguf_file, py::arg("path"), py::arg("kvs"), py::arg("alignment") = 32)
      .def("add_raw_file", &PyPlan::add_raw_file, py::arg("path"), py::arg("size"), py::arg("blobs"))
      .def("layout", &PyPlan::do_layout, "Compute offsets, headers and file sizes; raises on an invalid plan.")
      .def("tensor_spans", &PyPlan::tensor_spans)
      .def("file_sizes", &PyPlan::file_sizes)
      .def("execute", &PyPlan::execute, py::arg("threads") = 0, py::arg("chunk_bytes") = 4u << 20,
           py::arg("progress") = py::none(), "Run the plan; the GIL is released while bytes move.");
}
