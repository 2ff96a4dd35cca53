// pyconv._core: converts Python values to the core's structs and back, releases the GIL while the
// engine runs, and maps core errors to one Python exception. Nothing else lives here.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cctype>
#include <cstring>
#include <optional>

#include "core/dtype.h"
#include "core/error.h"
#include "engine/executor.h"
#include "engine/layout.h"
#include "kernels/cast.h"
#include "kernels/quant.h"

namespace py = pybind11;
using namespace pyconv;

namespace {

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

GgufValue gguf_value(GgufType type, const py::handle& value) {
  GgufValue v;
  v.type = type;
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

// Keeps the plan the bound classes build, lays it out and runs it with the GIL released.
class PyPlan {
 public:
  uint32_t add_input(const std::string& path) { return push(plan_.inputs, path); }
  uint32_t add_source(const Source& s) { return push(plan_.sources, s); }
  uint32_t add_tensor(const Tensor& t) { return push(plan_.tensors, t); }
  uint32_t add_file(const OutputFileSpec& f) { return push(plan_.files, f); }
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
  std::vector<TensorReport> execute(int threads, uint64_t chunk_bytes, const py::object& progress) {
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
    try {
      py::gil_scoped_release release;
      return pyconv::execute(plan_, opt, fn);
    } catch (const Cancelled&) {
      if (pending) throw std::move(*pending);
      throw;
    }
  }

 private:
  template <typename T>
  static uint32_t push(std::vector<T>& v, const T& item) {
    v.push_back(item);
    return static_cast<uint32_t>(v.size() - 1);
  }
  Plan plan_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyconv's C++ engine: plans run on memory-mapped inputs, cast and quantization kernels.";

  // CoreError carries where the problem is: .tensor (index into the plan's tensors, or None) and
  // .file (an input or output path, or None), beside .message; str() joins them for reading.
  static py::exception<Error> core_error(m, "CoreError", PyExc_RuntimeError);
  core_error.attr("tensor") = py::none();
  core_error.attr("file") = py::none();
  core_error.attr("message") = py::str("");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Cancelled& e) {
      PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
    } catch (const Error& e) {
      py::object exc = py::handle(core_error.ptr())(e.what());  // an instance, to set its fields
      exc.attr("message") = e.message();
      exc.attr("tensor") = e.has_tensor() ? py::object(py::int_(e.tensor())) : py::object(py::none());
      exc.attr("file") = e.file().empty() ? py::object(py::none()) : py::object(py::str(e.file()));
      PyErr_SetObject(core_error.ptr(), exc.ptr());
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
      .def_property_readonly("pack_codes", [](const DTypeTraits& t) {
             return t.pack ? py::object(py::str(traits(t.pack_codes).name)) : py::object(py::none());
           })
      .def_property_readonly("pack_scales", [](const DTypeTraits& t) {
             return t.pack ? py::object(py::str(traits(t.pack_scales).name)) : py::object(py::none());
           })
      .def_readonly("ternary", &DTypeTraits::ternary)
      .def_readonly("mainline", &DTypeTraits::mainline)
      .def_property_readonly("file_type", [=](const DTypeTraits& t) { return optional_int(t.file_type); })
      .def_property_readonly("fallback", [=](const DTypeTraits& t) { return optional_int(t.fallback); })
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
  }, py::arg("data"), py::arg("from_dtype"), py::arg("to_dtype"), "Convert raw elements between f64/f32/f16/bf16, or from f8_e4m3/f8_e5m2.");

  py::class_<QuantParams>(m, "QuantParams", "Per-tensor values a type's kernels use (a tensor's scale).")
      .def(py::init<>())
      .def_readwrite("tensor_scale", &QuantParams::tensor_scale);

  m.def("quantize", [](const py::array_t<float, py::array::c_style | py::array::forcecast>& src, DType type,
                       const std::optional<py::array_t<float, py::array::c_style | py::array::forcecast>>& importance) {
    const size_t n = static_cast<size_t>(src.size());
    const size_t per_row = src.ndim() ? static_cast<size_t>(src.shape(src.ndim() - 1)) : n;
    if (importance && static_cast<size_t>(importance->size()) != per_row)
      throw Error("quantize: importance holds " + std::to_string(importance->size()) + " values for rows of " +
                  std::to_string(per_row));
    const float* weights = importance ? importance->data() : nullptr;
    py::bytes out(nullptr, static_cast<size_t>(tensor_nbytes(type, n)));  // filled in place: no zeroing, no copy
    auto* dst = reinterpret_cast<uint8_t*>(PyBytes_AsString(out.ptr()));
    {
      py::gil_scoped_release release;
      quantize_tensor(type, src.data(), dst, per_row ? n / per_row : 0, per_row, weights);
    }
    return out;
  }, py::arg("data"), py::arg("dtype"), py::arg("importance") = py::none(),
     "A whole tensor (rows along its last dimension) as `dtype` stores it: its blocks, then the type's tail. "
     "`importance`: one weight per column (an imatrix row) for the types that weigh their rounding error.");
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
  }, py::arg("data"), py::arg("dtype"), py::arg("numel"), py::arg_v("params", QuantParams{}, "QuantParams()"),
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

  py::enum_<OpKind>(m, "OpKind", "What an op does to a tensor's values (csrc/engine/plan.h).")
      .value("ADD_SCALAR", OpKind::AddScalar)
      .value("TERNARIZE_ABSMEAN", OpKind::TernarizeAbsmean);
  py::enum_<Container>(m, "Container", "How an output file is laid out.")
      .value("RAW", Container::Raw)
      .value("SAFETENSORS", Container::Safetensors)
      .value("GGUF", Container::Gguf);
  py::enum_<GgufType> gguf_type(m, "GgufType", "GGUF metadata value types, with the format's own numbers.");
  for (const auto& [name, type] : std::initializer_list<std::pair<const char*, GgufType>>{
           {"U8", GgufType::U8}, {"I8", GgufType::I8}, {"U16", GgufType::U16}, {"I16", GgufType::I16},
           {"U32", GgufType::U32}, {"I32", GgufType::I32}, {"F32", GgufType::F32}, {"BOOL", GgufType::BOOL},
           {"STRING", GgufType::STRING}, {"ARRAY", GgufType::ARRAY}, {"U64", GgufType::U64}, {"I64", GgufType::I64},
           {"F64", GgufType::F64}})
    gguf_type.value(name, type);

  py::class_<Segment>(m, "Segment", "Bytes [offset, offset + nbytes) of input `file` (an index from Plan.add_input).")
      .def(py::init([](uint32_t file, uint64_t offset, uint64_t nbytes) { return Segment{file, offset, nbytes}; }),
           py::arg("file"), py::arg("offset"), py::arg("nbytes"))
      .def_readwrite("file", &Segment::file)
      .def_readwrite("offset", &Segment::offset)
      .def_readwrite("nbytes", &Segment::nbytes);
  py::class_<Scale>(m, "Scale", "Codes of a source times the element of scale source `source` covering their block: "
                                "the source seen as `shape`, `block` elements per scale along each dim; source -1: none.")
      .def(py::init([](int64_t source, std::vector<int64_t> shape, std::vector<int64_t> block) {
             return Scale{source, std::move(shape), std::move(block)};
           }),
           py::arg("source") = -1, py::arg("shape") = std::vector<int64_t>{}, py::arg("block") = std::vector<int64_t>{})
      .def_readwrite("source", &Scale::source)
      .def_readwrite("shape", &Scale::shape)
      .def_readwrite("block", &Scale::block);
  py::class_<LowRank>(m, "LowRank", "factor * (B @ A) added to a source seen as [rows, cols]: sources `b` [rows, rank] "
                                    "and `a` [rank, cols] hold plain floats.")
      .def(py::init([](int64_t a, int64_t b, int64_t rows, int64_t cols, int64_t rank, float factor) {
             return LowRank{a, b, rows, cols, rank, factor};
           }),
           py::arg("a"), py::arg("b"), py::arg("rows"), py::arg("cols"), py::arg("rank"), py::arg("factor"))
      .def_readwrite("a", &LowRank::a)
      .def_readwrite("b", &LowRank::b)
      .def_readwrite("rows", &LowRank::rows)
      .def_readwrite("cols", &LowRank::cols)
      .def_readwrite("rank", &LowRank::rank)
      .def_readwrite("factor", &LowRank::factor);
  py::class_<Source>(m, "Source", "A virtual row-major array of `dtype`: its segments one after another, its values "
                                  "times a scale when one is given, plus its low-rank updates.")
      .def(py::init([](DType dtype, std::vector<Segment> segments, Scale scale, std::vector<LowRank> updates) {
             return Source{dtype, std::move(segments), std::move(scale), std::move(updates)};
           }),
           py::arg("dtype"), py::arg("segments"), py::arg_v("scale", Scale{}, "Scale()"),
           py::arg_v("updates", std::vector<LowRank>{}, "[]"))
      .def_readwrite("dtype", &Source::dtype)
      .def_readwrite("segments", &Source::segments)
      .def_readwrite("scale", &Source::scale)
      .def_readwrite("updates", &Source::updates);
  py::class_<BitField>(m, "BitField", "A u8 source read as (((x >> shift) & (2^bits - 1)) + offset) * scale; bits 0: as it is.")
      .def(py::init([](uint32_t bits, uint32_t shift, float offset, float scale) { return BitField{bits, shift, offset, scale}; }),
           py::arg("bits") = 0, py::arg("shift") = 0, py::arg("offset") = 0.0f, py::arg("scale") = 1.0f)
      .def_readwrite("bits", &BitField::bits)
      .def_readwrite("shift", &BitField::shift)
      .def_readwrite("offset", &BitField::offset)
      .def_readwrite("scale", &BitField::scale);
  py::class_<Part>(m, "Part", "The box [dst_start, dst_start + shape) of a tensor's layout, read from a source at "
                              "src_offset + sum(i[d] * src_strides[d]).")
      .def(py::init([](uint32_t source, int64_t src_offset, std::vector<int64_t> src_strides, std::vector<int64_t> dst_start,
                       std::vector<int64_t> shape, BitField field) {
             return Part{source, src_offset, std::move(src_strides), std::move(dst_start), std::move(shape), field};
           }),
           py::arg("source"), py::arg("src_offset"), py::arg("src_strides"), py::arg("dst_start"), py::arg("shape"),
           py::arg_v("field", BitField{}, "BitField()"))
      .def_readwrite("source", &Part::source)
      .def_readwrite("src_offset", &Part::src_offset)
      .def_readwrite("src_strides", &Part::src_strides)
      .def_readwrite("dst_start", &Part::dst_start)
      .def_readwrite("shape", &Part::shape)
      .def_readwrite("field", &Part::field);
  py::class_<Op>(m, "Op", "An operation on a tensor's values before the cast or quantization.")
      .def(py::init([](OpKind kind, double value, bool keep_if_ternary, DType round_to) {
             return Op{kind, value, keep_if_ternary, round_to};
           }),
           py::arg("kind"), py::arg("value") = 0.0, py::arg("keep_if_ternary") = true, py::arg_v("round_to", DType::F32, "DType.F32"))
      .def_readwrite("kind", &Op::kind)
      .def_readwrite("value", &Op::value)
      .def_readwrite("keep_if_ternary", &Op::keep_if_ternary)
      .def_readwrite("round_to", &Op::round_to);
  py::class_<Tensor>(m, "Tensor", "An output tensor: parts placed in its layout, then ops, then cast or quantized to `out`.")
      .def(py::init([](std::string name, std::vector<int64_t> shape, std::vector<int64_t> layout, DType out, uint32_t file,
                       std::vector<Part> parts, std::vector<Op> ops, uint64_t offset, std::vector<float> importance) {
             Tensor t;
             t.name = std::move(name);
             t.shape = std::move(shape);
             t.layout = std::move(layout);
             t.out = out;
             t.file = file;
             t.parts = std::move(parts);
             t.ops = std::move(ops);
             t.offset = offset;
             t.importance = std::move(importance);
             return t;
           }),
           py::arg("name"), py::arg("shape"), py::arg("layout"), py::arg("out"), py::arg("file"), py::arg("parts"),
           py::arg("ops") = std::vector<Op>{}, py::arg("offset") = 0, py::arg("importance") = std::vector<float>{})
      .def_readwrite("name", &Tensor::name)
      .def_readwrite("shape", &Tensor::shape)
      .def_readwrite("layout", &Tensor::layout)
      .def_readwrite("out", &Tensor::out)
      .def_readwrite("file", &Tensor::file)
      .def_readwrite("parts", &Tensor::parts)
      .def_readwrite("ops", &Tensor::ops)
      .def_readwrite("offset", &Tensor::offset)
      .def_readwrite("importance", &Tensor::importance);
  py::class_<GgufKV>(m, "GgufKV", "A GGUF metadata key and value; an ARRAY value is (element type, items), items "
                                  "a list or numbers already packed little-endian as bytes.")
      .def(py::init([](std::string key, GgufType type, const py::handle& value) {
             return GgufKV{std::move(key), gguf_value(type, value)};
           }),
           py::arg("key"), py::arg("type"), py::arg("value"))
      .def_readonly("key", &GgufKV::key);
  py::class_<OutputFileSpec>(m, "OutputFile", "A file the plan writes. Safetensors and GGUF files are laid out by the "
                                              "engine; a raw file is laid out by the caller (size and header blobs given).")
      .def(py::init([](std::string path, Container container, std::vector<std::pair<std::string, std::string>> metadata,
                       std::vector<GgufKV> kvs, uint32_t alignment, std::vector<std::pair<uint64_t, py::bytes>> blobs,
                       uint64_t size) {
             OutputFileSpec f;
             f.path = std::move(path);
             f.container = container;
             f.metadata = std::move(metadata);
             f.kvs = std::move(kvs);
             f.alignment = alignment;
             for (auto& [offset, data] : blobs) f.blobs.emplace_back(offset, std::string(data));
             f.size = size;
             return f;
           }),
           py::arg("path"), py::arg("container"), py::arg("metadata") = std::vector<std::pair<std::string, std::string>>{},
           py::arg("kvs") = std::vector<GgufKV>{}, py::arg("alignment") = 32,
           py::arg("blobs") = std::vector<std::pair<uint64_t, py::bytes>>{}, py::arg("size") = 0)
      .def_readonly("path", &OutputFileSpec::path)
      .def_readonly("container", &OutputFileSpec::container)
      .def_readonly("size", &OutputFileSpec::size);
  py::class_<TensorReport>(m, "TensorReport", "What the engine decided for a tensor whose treatment depends on its values.")
      .def_readonly("tensor", &TensorReport::tensor)
      .def_readonly("ternarized", &TensorReport::ternarized)
      .def_readonly("already_ternary", &TensorReport::already_ternary)
      .def_readonly("scale", &TensorReport::scale)
      .def_readonly("mean_abs", &TensorReport::mean_abs);

  py::class_<PyPlan>(m, "Plan", "A conversion plan in the engine's terms; built by pyconv.engine.")
      .def(py::init<>())
      .def("add_input", &PyPlan::add_input, py::arg("path"), "Index of a new input file.")
      .def("add_source", &PyPlan::add_source, py::arg("source"), "Index of a new source.")
      .def("add_tensor", &PyPlan::add_tensor, py::arg("tensor"), "Index of a new output tensor.")
      .def("add_file", &PyPlan::add_file, py::arg("file"), "Index of a new output file.")
      .def("layout", &PyPlan::do_layout, "Compute offsets, headers and file sizes; raises on an invalid plan.")
      .def("tensor_spans", &PyPlan::tensor_spans, "(offset, nbytes) of every tensor, once laid out.")
      .def("file_sizes", &PyPlan::file_sizes)
      .def("execute", &PyPlan::execute, py::arg("threads") = 0, py::arg("chunk_bytes") = 4u << 20,
           py::arg("progress") = py::none(), "Run the plan; the GIL is released while bytes move.");
}
