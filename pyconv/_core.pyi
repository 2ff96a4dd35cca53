"""
pyconv's C++ engine: plans run on memory-mapped inputs, cast and quantization kernels.
"""
import collections.abc
import typing

import numpy
import numpy.typing

# Anything the buffer protocol exposes as contiguous bytes (numpy arrays included).
_Buffer: typing.TypeAlias = bytes | bytearray | memoryview | numpy.ndarray
__all__: list[str] = ['BitField', 'Container', 'CoreError', 'DType', 'GgufKV', 'GgufType', 'LowRank', 'Op', 'OpKind', 'OutputFile', 'Part', 'Plan', 'QuantParams', 'Scale', 'Segment', 'Source', 'Tensor', 'TensorReport', 'TypeInfo', 'TypeKind', 'cast', 'default_threads', 'dequantize', 'dequantize_blocks', 'invalid_codes', 'quantize', 'set_simd_enabled', 'simd_level', 'tensor_nbytes', 'tensor_params', 'types']
class CoreError(RuntimeError):
    message: str
    tensor: int | None
    file: str | None
class DType:
    """
    Element and block type ids (ggml's ids for ggml types).

    Members:

      F32

      F16

      BF16

      F64

      I8

      I16

      I32

      I64

      U8

      BOOL

      U16

      U32

      U64

      F8_E4M3

      F8_E5M2

      F8_E8M0

      F4_E2M1

      Q4_0

      Q4_1

      Q5_0

      Q5_1

      Q8_0

      Q8_1

      Q2_K

      Q3_K

      Q4_K

      Q5_K

      Q6_K

      Q8_K

      IQ2_XXS

      IQ2_XS

      IQ3_XXS

      IQ1_S

      IQ4_NL

      IQ3_S

      IQ2_S

      IQ4_XS

      IQ1_M

      TQ1_0

      TQ2_0

      I2_S

      MXFP4

      NVFP4

      Q1_0
    """
    BF16: typing.ClassVar[DType]
    BOOL: typing.ClassVar[DType]
    F16: typing.ClassVar[DType]
    F32: typing.ClassVar[DType]
    F4_E2M1: typing.ClassVar[DType]
    F64: typing.ClassVar[DType]
    F8_E4M3: typing.ClassVar[DType]
    F8_E5M2: typing.ClassVar[DType]
    F8_E8M0: typing.ClassVar[DType]
    I16: typing.ClassVar[DType]
    I2_S: typing.ClassVar[DType]
    I32: typing.ClassVar[DType]
    I64: typing.ClassVar[DType]
    I8: typing.ClassVar[DType]
    IQ1_M: typing.ClassVar[DType]
    IQ1_S: typing.ClassVar[DType]
    IQ2_S: typing.ClassVar[DType]
    IQ2_XS: typing.ClassVar[DType]
    IQ2_XXS: typing.ClassVar[DType]
    IQ3_S: typing.ClassVar[DType]
    IQ3_XXS: typing.ClassVar[DType]
    IQ4_NL: typing.ClassVar[DType]
    IQ4_XS: typing.ClassVar[DType]
    MXFP4: typing.ClassVar[DType]
    NVFP4: typing.ClassVar[DType]
    Q1_0: typing.ClassVar[DType]
    Q2_K: typing.ClassVar[DType]
    Q3_K: typing.ClassVar[DType]
    Q4_0: typing.ClassVar[DType]
    Q4_1: typing.ClassVar[DType]
    Q4_K: typing.ClassVar[DType]
    Q5_0: typing.ClassVar[DType]
    Q5_1: typing.ClassVar[DType]
    Q5_K: typing.ClassVar[DType]
    Q6_K: typing.ClassVar[DType]
    Q8_0: typing.ClassVar[DType]
    Q8_1: typing.ClassVar[DType]
    Q8_K: typing.ClassVar[DType]
    TQ1_0: typing.ClassVar[DType]
    TQ2_0: typing.ClassVar[DType]
    U16: typing.ClassVar[DType]
    U32: typing.ClassVar[DType]
    U64: typing.ClassVar[DType]
    U8: typing.ClassVar[DType]
    __members__: typing.ClassVar[dict[str, DType]]
    @typing.overload
    def __eq__(self, other: DType) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: object) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    @typing.overload
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @typing.overload
    def __init__(self, name: str) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: DType) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: object) -> bool:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class TypeKind:
    """
    How a type's elements are stored: converted floats, plain values, or blocks.

    Members:

      FLOAT

      PLAIN

      BLOCK
    """
    BLOCK: typing.ClassVar[TypeKind]
    FLOAT: typing.ClassVar[TypeKind]
    PLAIN: typing.ClassVar[TypeKind]
    __members__: typing.ClassVar[dict[str, TypeKind]]
    @typing.overload
    def __eq__(self, other: TypeKind) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: object) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: TypeKind) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: object) -> bool:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class TypeInfo:
    """
    One row of the type table (csrc/core/dtype.h says what each field means).
    """
    @property
    def block_bytes(self) -> int:
        ...
    @property
    def block_elems(self) -> int:
        ...
    @property
    def buffer_format(self) -> typing.Any:
        ...
    @property
    def can_dequantize(self) -> bool:
        ...
    @property
    def can_quantize(self) -> bool:
        ...
    @property
    def dims(self) -> int:
        ...
    @property
    def fallback(self) -> typing.Any:
        ...
    @property
    def file_type(self) -> typing.Any:
        ...
    @property
    def ggml_id(self) -> typing.Any:
        ...
    @property
    def id(self) -> DType:
        ...
    @property
    def kind(self) -> TypeKind:
        ...
    @property
    def mainline(self) -> bool:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def needs_stats(self) -> bool:
        ...
    @property
    def pack_codes(self) -> typing.Any:
        ...
    @property
    def pack_scales(self) -> typing.Any:
        ...
    @property
    def row_elems(self) -> int:
        ...
    @property
    def safetensors_name(self) -> typing.Any:
        ...
    @property
    def tail_bytes(self) -> int:
        ...
    @property
    def ternary(self) -> bool:
        ...
class QuantParams:
    """
    Per-tensor values a type's kernels use (a tensor's scale).
    """
    def __init__(self) -> None:
        ...
    @property
    def tensor_scale(self) -> float:
        ...
    @tensor_scale.setter
    def tensor_scale(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
class OpKind:
    """
    What an op does to a tensor's values (csrc/engine/plan.h).

    Members:

      ADD_SCALAR

      TERNARIZE_ABSMEAN
    """
    ADD_SCALAR: typing.ClassVar[OpKind]
    TERNARIZE_ABSMEAN: typing.ClassVar[OpKind]
    __members__: typing.ClassVar[dict[str, OpKind]]
    @typing.overload
    def __eq__(self, other: OpKind) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: object) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: OpKind) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: object) -> bool:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class Container:
    """
    How an output file is laid out.

    Members:

      RAW

      SAFETENSORS

      GGUF
    """
    GGUF: typing.ClassVar[Container]
    RAW: typing.ClassVar[Container]
    SAFETENSORS: typing.ClassVar[Container]
    __members__: typing.ClassVar[dict[str, Container]]
    @typing.overload
    def __eq__(self, other: Container) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: object) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: Container) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: object) -> bool:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class GgufType:
    """
    GGUF metadata value types, with the format's own numbers.

    Members:

      U8

      I8

      U16

      I16

      U32

      I32

      F32

      BOOL

      STRING

      ARRAY

      U64

      I64

      F64
    """
    ARRAY: typing.ClassVar[GgufType]
    BOOL: typing.ClassVar[GgufType]
    F32: typing.ClassVar[GgufType]
    F64: typing.ClassVar[GgufType]
    I16: typing.ClassVar[GgufType]
    I32: typing.ClassVar[GgufType]
    I64: typing.ClassVar[GgufType]
    I8: typing.ClassVar[GgufType]
    STRING: typing.ClassVar[GgufType]
    U16: typing.ClassVar[GgufType]
    U32: typing.ClassVar[GgufType]
    U64: typing.ClassVar[GgufType]
    U8: typing.ClassVar[GgufType]
    __members__: typing.ClassVar[dict[str, GgufType]]
    @typing.overload
    def __eq__(self, other: GgufType) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: object) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: GgufType) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: object) -> bool:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class Segment:
    """
    Bytes [offset, offset + nbytes) of input `file` (an index from Plan.add_input).
    """
    def __init__(self, file: typing.SupportsInt | typing.SupportsIndex, offset: typing.SupportsInt | typing.SupportsIndex, nbytes: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def file(self) -> int:
        ...
    @file.setter
    def file(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def nbytes(self) -> int:
        ...
    @nbytes.setter
    def nbytes(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def offset(self) -> int:
        ...
    @offset.setter
    def offset(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class Scale:
    """
    Codes of a source times the element of scale source `source` covering their block: the source seen as `shape`, `block` elements per scale along each dim; source -1: none.
    """
    def __init__(self, source: typing.SupportsInt | typing.SupportsIndex = -1, shape: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex] = [], block: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex] = []) -> None:
        ...
    @property
    def block(self) -> list[int]:
        ...
    @block.setter
    def block(self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
    @property
    def shape(self) -> list[int]:
        ...
    @shape.setter
    def shape(self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
    @property
    def source(self) -> int:
        ...
    @source.setter
    def source(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class LowRank:
    """
    factor * (B @ A) added to a source seen as [rows, cols]: sources `b` [rows, rank] and `a` [rank, cols] hold plain floats.
    """
    def __init__(self, a: typing.SupportsInt | typing.SupportsIndex, b: typing.SupportsInt | typing.SupportsIndex, rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, rank: typing.SupportsInt | typing.SupportsIndex, factor: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def a(self) -> int:
        ...
    @a.setter
    def a(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def b(self) -> int:
        ...
    @b.setter
    def b(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def cols(self) -> int:
        ...
    @cols.setter
    def cols(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def factor(self) -> float:
        ...
    @factor.setter
    def factor(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def rank(self) -> int:
        ...
    @rank.setter
    def rank(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def rows(self) -> int:
        ...
    @rows.setter
    def rows(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class Source:
    """
    A virtual row-major array of `dtype`: its segments one after another, its values times a scale when one is given, plus its low-rank updates.
    """
    dtype: DType
    scale: Scale
    def __init__(self, dtype: DType | str, segments: collections.abc.Sequence[Segment], scale: Scale = ..., updates: collections.abc.Sequence[LowRank] = []) -> None:
        ...
    @property
    def segments(self) -> list[Segment]:
        ...
    @segments.setter
    def segments(self, arg0: collections.abc.Sequence[Segment]) -> None:
        ...
    @property
    def updates(self) -> list[LowRank]:
        ...
    @updates.setter
    def updates(self, arg0: collections.abc.Sequence[LowRank]) -> None:
        ...
class BitField:
    """
    A u8 source read as (((x >> shift) & (2^bits - 1)) + offset) * scale; bits 0: as it is.
    """
    def __init__(self, bits: typing.SupportsInt | typing.SupportsIndex = 0, shift: typing.SupportsInt | typing.SupportsIndex = 0, offset: typing.SupportsFloat | typing.SupportsIndex = 0.0, scale: typing.SupportsFloat | typing.SupportsIndex = 1.0) -> None:
        ...
    @property
    def bits(self) -> int:
        ...
    @bits.setter
    def bits(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def offset(self) -> float:
        ...
    @offset.setter
    def offset(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def scale(self) -> float:
        ...
    @scale.setter
    def scale(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def shift(self) -> int:
        ...
    @shift.setter
    def shift(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class Part:
    """
    The box [dst_start, dst_start + shape) of a tensor's layout, read from a source at src_offset + sum(i[d] * src_strides[d]).
    """
    field: BitField
    def __init__(self, source: typing.SupportsInt | typing.SupportsIndex, src_offset: typing.SupportsInt | typing.SupportsIndex, src_strides: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], dst_start: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], shape: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], field: BitField = ...) -> None:
        ...
    @property
    def dst_start(self) -> list[int]:
        ...
    @dst_start.setter
    def dst_start(self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
    @property
    def shape(self) -> list[int]:
        ...
    @shape.setter
    def shape(self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
    @property
    def source(self) -> int:
        ...
    @source.setter
    def source(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def src_offset(self) -> int:
        ...
    @src_offset.setter
    def src_offset(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def src_strides(self) -> list[int]:
        ...
    @src_strides.setter
    def src_strides(self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
class Op:
    """
    An operation on a tensor's values before the cast or quantization.
    """
    keep_if_ternary: bool
    kind: OpKind
    round_to: DType
    def __init__(self, kind: OpKind, value: typing.SupportsFloat | typing.SupportsIndex = 0.0, keep_if_ternary: bool = True, round_to: DType = ...) -> None:
        ...
    @property
    def value(self) -> float:
        ...
    @value.setter
    def value(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
class Tensor:
    """
    An output tensor: parts placed in its layout, then ops, then cast or quantized to `out`.
    """
    name: str
    out: DType
    def __init__(self, name: str, shape: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], layout: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], out: DType | str, file: typing.SupportsInt | typing.SupportsIndex, parts: collections.abc.Sequence[Part], ops: collections.abc.Sequence[Op] = [], offset: typing.SupportsInt | typing.SupportsIndex = 0, importance: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex] = []) -> None:
        ...
    @property
    def file(self) -> int:
        ...
    @file.setter
    def file(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def importance(self) -> list[float]:
        ...
    @importance.setter
    def importance(self, arg0: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex]) -> None:
        ...
    @property
    def layout(self) -> list[int]:
        ...
    @layout.setter
    def layout(self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
    @property
    def offset(self) -> int:
        ...
    @offset.setter
    def offset(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def ops(self) -> list[Op]:
        ...
    @ops.setter
    def ops(self, arg0: collections.abc.Sequence[Op]) -> None:
        ...
    @property
    def parts(self) -> list[Part]:
        ...
    @parts.setter
    def parts(self, arg0: collections.abc.Sequence[Part]) -> None:
        ...
    @property
    def shape(self) -> list[int]:
        ...
    @shape.setter
    def shape(self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
class GgufKV:
    """
    A GGUF metadata key and value; an ARRAY value is (element type, items), items a list or numbers already packed little-endian as bytes.
    """
    def __init__(self, key: str, type: GgufType, value: typing.Any) -> None:
        ...
    @property
    def key(self) -> str:
        ...
class OutputFile:
    """
    A file the plan writes. Safetensors and GGUF files are laid out by the engine; a raw file is laid out by the caller (size and header blobs given).
    """
    def __init__(self, path: str, container: Container, metadata: collections.abc.Sequence[tuple[str, str]] = [], kvs: collections.abc.Sequence[GgufKV] = [], alignment: typing.SupportsInt | typing.SupportsIndex = 32, blobs: collections.abc.Sequence[tuple[typing.SupportsInt | typing.SupportsIndex, bytes]] = [], size: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
        ...
    @property
    def container(self) -> Container:
        ...
    @property
    def path(self) -> str:
        ...
    @property
    def size(self) -> int:
        ...
class TensorReport:
    """
    What the engine decided for a tensor whose treatment depends on its values.
    """
    @property
    def already_ternary(self) -> bool:
        ...
    @property
    def mean_abs(self) -> float:
        ...
    @property
    def scale(self) -> float:
        ...
    @property
    def tensor(self) -> int:
        ...
    @property
    def ternarized(self) -> bool:
        ...
class Plan:
    """
    A conversion plan in the engine's terms; built by pyconv.engine.
    """
    def __init__(self) -> None:
        ...
    def add_file(self, file: OutputFile) -> int:
        """
        Index of a new output file.
        """
    def add_input(self, path: str) -> int:
        """
        Index of a new input file.
        """
    def add_source(self, source: Source) -> int:
        """
        Index of a new source.
        """
    def add_tensor(self, tensor: Tensor) -> int:
        """
        Index of a new output tensor.
        """
    def execute(self, threads: typing.SupportsInt | typing.SupportsIndex = 0, chunk_bytes: typing.SupportsInt | typing.SupportsIndex = 4194304, progress: typing.Any = None) -> list[TensorReport]:
        """
        Run the plan; the GIL is released while bytes move.
        """
    def file_sizes(self) -> list[int]:
        ...
    def layout(self) -> None:
        """
        Compute offsets, headers and file sizes; raises on an invalid plan.
        """
    def tensor_spans(self) -> list[tuple[int, int]]:
        """
        (offset, nbytes) of every tensor, once laid out.
        """
def cast(data: _Buffer, from_dtype: DType | str, to_dtype: DType | str) -> bytes:
    """
    Convert raw elements between f64/f32/f16/bf16, or from f8_e4m3/f8_e5m2.
    """
def default_threads() -> int:
    ...
def dequantize(data: _Buffer, dtype: DType | str, numel: typing.SupportsInt | typing.SupportsIndex) -> numpy.typing.NDArray[numpy.float32]:
    """
    Decode a whole tensor of `numel` elements, stored as `dtype` (blocks, then the tail), into f32.
    """
def dequantize_blocks(data: _Buffer, dtype: DType | str, numel: typing.SupportsInt | typing.SupportsIndex, params: QuantParams = ...) -> numpy.typing.NDArray[numpy.float32]:
    """
    Decode `numel` elements of a tensor's blocks (a part of them: the tensor's parameters are given) into f32.
    """
def invalid_codes(data: _Buffer, dtype: DType | str, numel: typing.SupportsInt | typing.SupportsIndex) -> int:
    """
    How many codes in `numel` elements of blocks the type's quantizer never writes (0 for types without such codes).
    """
def quantize(data: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], dtype: DType | str, importance: typing.Annotated[numpy.typing.ArrayLike, numpy.float32] | None = None) -> bytes:
    """
    A whole tensor (rows along its last dimension) as `dtype` stores it: its blocks, then the type's tail. `importance`: one weight per column (an imatrix row) for the types that weigh their rounding error.
    """
def set_simd_enabled(enabled: bool) -> None:
    """
    Force the scalar kernels (False) or allow SIMD.
    """
def simd_level() -> str:
    """
    The kernel set in use: 'avx2' or 'scalar'.
    """
def tensor_nbytes(dtype: DType | str, numel: typing.SupportsInt | typing.SupportsIndex) -> int:
    """
    Bytes a tensor of `numel` elements takes when stored as `dtype` (its blocks and its tail).
    """
def tensor_params(data: _Buffer, dtype: DType | str, numel: typing.SupportsInt | typing.SupportsIndex) -> QuantParams:
    """
    The parameters in the tail of a whole tensor (defaults without a tail).
    """
def types() -> list[TypeInfo]:
    """
    Every row of the type table: the built-in ones, then those registered from C++.
    """
