"""Lowering: a slimgraph Graph becomes a Relax module with one TIR PrimFunc per kernel.

Every op has one lowering function, registered here by op name (the op
modules under ``backends/tvm/ops`` fill :data:`LOWERINGS`). A lowering turns
the TE tensors of its inputs into the TE tensors of its outputs. A kernel is
one unfused node, or one ``fused`` node whose body's lowerings are composed
into a single TE graph: so each fused region becomes exactly one PrimFunc,
and the IR's fusion decides the kernels. Kernels that lower to the same
PrimFunc (TVM's structural equality: same computation, shapes, dtypes and
baked-in constants; weights are parameters, names do not count) share the
first one's, so a transformer's identical layers compile once. Unfused
reshapes (reshape, flatten, squeeze, unsqueeze, identity) move no data and
become Relax views.

Weights (``const`` nodes) become parameters of the Relax ``main`` function,
after the graph inputs; a lowering may replace a weight by a re-laid-out copy
(:meth:`OpCall.param`), which is what the CPU convolution and matmul rules do.
Symbolic dims are bound to concrete sizes, except the ``dynamic`` ones: those stay
symbolic (a ``tirx.Var`` each: int64 in ``main``, as Relax shapes are; in the kernels
int32 where every tensor fits it, like their static extents, so index arithmetic has one
type), so one build serves every size; the Relax VM allocates per call.

Ops that index with data register index checks (:meth:`OpCall.check`): each
is one more output of its kernel, a bool saying every index was in range. On
CPUs the kernel asserts it itself once scheduled (:func:`assert_checks`, a TIR
assert raising IndexError); on GPUs, where the bool lives in device memory,
``main`` asserts it after its kernels (a Relax assert raising AssertionError).
Either message holds :data:`INDEX_CHECK`, by which ``CompiledModel`` turns it
into ``IndexOutOfRangeError``. The kernels clamp the positions they read and
write, so bad indices never touch memory outside a tensor: they only make the
call fail.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> from slimgraph.backends.tvm.targets import parse_target
    >>> g = Graph("tiny")
    >>> x = g.add_input("x", TensorType("f32", ("N", 4)))
    >>> g.set_outputs([g.call("relu", g.call("linear", x, g.const(np.ones((3, 4), np.float32))))])
    >>> lowered = lower_graph(g, parse_target("llvm"), {"N": 2})
    >>> [k.name for k in lowered.kernels]
    ['k0_linear', 'k1_relu']
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping, Sequence

import numpy as np

from slimgraph.backends.tvm.encoded import Encoding, codebook_encoding, encoding_for_const
from slimgraph.errors import BackendError, SlimgraphError
from slimgraph.ir.graph import Graph, Node, Value
from slimgraph.ir.types import DType, TensorType, bind_dim, concrete, dim_mul
from slimgraph.registry import Registry

#: TVM dtype of each IR dtype; int4 is held one value per byte, as ml_dtypes does.
TVM_DTYPE = {
    DType.float32: "float32",
    DType.float64: "float64",
    DType.float16: "float16",
    DType.bfloat16: "bfloat16",
    DType.int4: "int8",
    DType.int8: "int8",
    DType.uint8: "uint8",
    DType.int32: "int32",
    DType.int64: "int64",
    DType.bool: "bool",
}

#: Ops the lowering driver handles itself: constants become parameters, fused regions compose their body.
DRIVER_OPS = frozenset({"const", "fused"})

#: Ops that decode stored weights. Applied to constants they are decoded once, when the model
#: is built, so the lowerings see the weight's values (the conv/matmul rules re-lay them out);
#: a ``codebook_decode`` weight is then stored encoded again in the layout the kernel reads
#: (see :meth:`_KernelBuilder.new_param`) unless ``weights="decoded"``.
DECODE_AT_LOAD = frozenset({"codebook_decode", "dequantize"})


def _decoded(node: Node, known: list) -> np.ndarray | None:
    """The decoded array of a decoder whose inputs are all known constants, else None."""
    if node.op not in DECODE_AT_LOAD or not known or any(a is None for a in known):
        return None
    return np.asarray(node.opdef.impl(*known, **node.attrs))


#: How a kernel holds weights the IR stores compressed: ``compressed`` keeps them so and
#: decodes inside the kernel (and stores mostly-zero weights sparse, computing with sparse
#: kernels); ``decoded`` stores them decoded and dense.
WEIGHT_FORMS = ("compressed", "decoded")
#: The whole-model choice that leaves each kernel's form to a measured chooser (:mod:`.weight_forms`).
AUTO = "auto"


def _encoding(node: Node, array: np.ndarray, known: list) -> Encoding | None:
    """How the constant weight ``node`` produces (``array``, decoded) is stored compressed, or None."""
    if node.op == "codebook_decode":
        return codebook_encoding(known[1], node.attrs["bits"], array.size)
    if node.op == "const":
        return encoding_for_const(_storable(array), int4=node.output.type.dtype is DType.int4)
    return None

#: The words every index check's message holds, by which a compiled model recognises its failure.
INDEX_CHECK = "index out of range"

#: Ops that only reinterpret a shape: unfused, they become Relax views (no kernel).
VIEW_OPS = frozenset({"reshape", "flatten", "squeeze", "unsqueeze", "identity"})


@dataclass
class OpCall:
    """What a lowering function gets: the TE tensors of the inputs, the constant
    arrays behind them (None where an input is not a constant), the attributes
    and the concrete input and output types."""

    op: str
    args: list
    consts: list
    attrs: dict
    in_types: list[TensorType]
    out_types: list[TensorType]
    target: object
    kernel: "_KernelBuilder"
    where: str = ""

    def shape(self, i: int = 0) -> tuple:
        """The shape of output ``i``: ints, and ``tirx`` expressions for dynamic dims."""
        return _shape(self.out_types[i], self.kernel.vars)

    def dtype(self, i: int = 0) -> str:
        """The TVM dtype of output ``i``."""
        return TVM_DTYPE[self.out_types[i].dtype]

    @property
    def compress(self) -> bool:
        """Whether weights are kept in compressed forms (``weights="compressed"`` on a CPU):
        encoded codes, and sparse storage for mostly-zero weights."""
        return self.kernel.compress

    def param(self, array: np.ndarray, hint: str, compressed: bool = False):
        """A new weight parameter holding ``array`` (e.g. a re-laid-out copy of a constant);
        ``compressed`` says it is a compressed form of the weight (a sparse layout), so the
        kernel is one whose form ``weights="auto"`` measures."""
        return self.kernel.new_param(np.ascontiguousarray(array), hint, compressed)

    def check(self, ok, what: str) -> None:
        """Make the call fail when ``ok`` (a 0-d bool TE tensor: every index is in range) is
        false; ``what`` says which indices and which bounds."""
        self.kernel.checks.append((ok, f"{self.kernel.name} ({self.where}): {INDEX_CHECK}: {what}"))


LowerFn = Callable[[OpCall], "object | Sequence[object]"]

#: Op name -> lowering function. Filled by the modules of ``slimgraph.backends.tvm.ops``.
LOWERINGS: Registry[str, LowerFn] = Registry("TVM lowering")


def register(*ops: str) -> Callable[[LowerFn], LowerFn]:
    """Decorator registering a lowering function for one or more op names."""

    return LOWERINGS.decorator(*ops)


def lowering_table() -> dict[str, LowerFn]:
    """Every registered lowering, by op name (importing the op modules first)."""
    import slimgraph.backends.tvm.ops  # noqa: F401  (registers the lowerings)

    return dict(LOWERINGS)


def unsupported_ops() -> list[str]:
    """Registered IR ops that the TVM backend cannot lower (empty when complete)."""
    from slimgraph.ir.registry import all_ops

    lowering_table()
    return sorted(LOWERINGS.missing(op for op in all_ops() if op not in DRIVER_OPS))


# ---------------------------------------------------------------------------
# The lowered form


@dataclass
class KernelInfo:
    """One kernel call: its own ``name``, the PrimFunc ``func`` it runs (its own
    name, or the first structurally identical kernel's), the node(s) it
    computes, FLOPs, and the keys of the values it reads and writes (see
    :class:`Lowered`)."""

    name: str
    func: str
    ops: tuple[str, ...]
    node: str
    flops: int
    args: list[str]
    outs: list[str]
    out_types: list[TensorType]
    anchor: str = ""
    weights: str = ""  # the form its compressed weights took (WEIGHT_FORMS); "" when it reads none
    checks: list[tuple[str, str]] = field(default_factory=list)  # (key of an all-indices-in-range bool, message)
    shape_args: list[str] = field(default_factory=list)  # dynamic symbols passed as scalars (no buffer dim holds them)


@dataclass
class ViewStep:
    """A reshape that moves no data: ``out`` is ``src`` seen with another shape."""

    src: str
    out: str
    type: TensorType


@dataclass
class Lowered:
    """A lowered graph. Values are named by keys: ``in:NAME`` for inputs,
    ``p:NAME`` for parameters, ``v:NAME`` for node outputs. ``steps`` run in
    order (kernels and views); ``main`` of ``mod`` runs them all."""

    mod: object
    inputs: list[tuple[str, TensorType]]
    params: list[tuple[str, np.ndarray]]
    outputs: list[str]
    output_types: list[TensorType]
    kernels: list[KernelInfo]
    steps: list = field(default_factory=list)
    shape_vars: dict = field(default_factory=dict)  # dynamic symbol -> its tirx.Var in main (int64)
    index_dtype: str = "int32"  # the dtype of the dynamic symbols inside the kernels


# ---------------------------------------------------------------------------
# Building one kernel


class _KernelBuilder:
    """Collects the TE placeholders of one kernel and where each one comes from."""

    def __init__(self, name: str, params: "_ParamTable", shape_vars: dict):
        self.name = name
        self.params = params
        self.vars = shape_vars
        self.sources: list[tuple[object, str]] = []  # (placeholder, value key)
        self.checks: list[tuple[object, str]] = []  # (all indices in range: a bool tensor, message)
        self.encodings: list[Encoding] = []  # how the weights this kernel reads are stored (empty: plain)
        self.compress = False  # whether this kernel keeps compressed weights compressed
        self.stores_compressed = False  # whether it did: a weight stored encoded or sparse
        self._by_key: dict[str, object] = {}

    def placeholder(self, key: str, ttype: TensorType):
        from tvm import te

        if key not in self._by_key:
            ph = te.placeholder(_shape(ttype, self.vars), TVM_DTYPE[ttype.dtype], name=_ident(key.split(":", 1)[1]))
            self._by_key[key] = ph
            self.sources.append((ph, key))
        return self._by_key[key]

    def new_param(self, array: np.ndarray, hint: str, compressed: bool = False):
        """A placeholder for a new weight; stored encoded when one of this kernel's
        encodings holds its values (a re-laid-out copy of an encoded weight).
        ``compressed``: the array is itself a compressed form (a sparse layout)."""
        stored = _storable(array)
        for encoding in self.encodings:
            parts = encoding.encode(stored)
            if parts is not None:
                keys = [self.params.add(f"{self.name}.{hint}.{suffix}", part) for suffix, part in parts]
                return self._decoded(keys, encoding, stored)
        key = self.params.add(f"{self.name}.{hint}", array)
        self.stores_compressed |= compressed
        return self.placeholder(key, TensorType.of_array(stored))

    def read(self, key: str, ttype: TensorType, array: np.ndarray | None, encoding: "Encoding | None"):
        """The TE tensor a kernel reads for value ``key``: its placeholder, or for an encoded
        weight (``array`` its decoded values) the decoding stage over its encoded parameters."""
        if encoding is None or array is None or not self.compress:
            return self.placeholder(key, ttype)
        if encoding not in self.encodings:
            self.encodings.append(encoding)
        if key not in self._by_key:
            stored = _storable(array)
            keys = self.params.encoded.get(key)
            if keys is None:
                parts = encoding.encode(stored)
                keys = self.params.encoded[key] = [self.params.add(f"{key[2:]}.{suffix}", part) for suffix, part in parts]
            self._by_key[key] = self._decoded(keys, encoding, stored)
        return self._by_key[key]

    def _decoded(self, keys: list[str], encoding: "Encoding", stored: np.ndarray):
        self.stores_compressed = True
        parts = [self.placeholder(k, TensorType.of_array(self.params.arrays[k[2:]])) for k in keys]
        return encoding.decode(parts, stored.shape, str(stored.dtype))


class _ParamTable:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.encoded: dict[str, list[str]] = {}  # key of an encoded weight -> keys of its stored parts
        self.by_content: dict[tuple, str] = {}  # (dtype, shape, digest) -> the key holding that array

    def add(self, name: str, array: np.ndarray) -> str:
        # equal arrays are stored once: kernels re-lay out a weight that several layers share
        # (as cse leaves it) into equal copies, one per kernel
        content = (array.dtype.str, array.shape, hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest())
        if content in self.by_content:
            return self.by_content[content]
        base, n = name, 1
        while name in self.arrays:
            n += 1
            name = f"{base}_{n}"
        self.arrays[name] = array
        self.by_content[content] = "p:" + name
        return "p:" + name


@dataclass
class _LoweredKernel:
    """One kernel lowered in one weight form: its builder, unscheduled PrimFunc, the keys of
    the values its parameters read, its dynamic-size scalars, output types and FLOPs."""

    builder: _KernelBuilder
    func: object
    used: list[str]
    shape_args: list[str]
    out_types: list[TensorType]
    flops: int


@dataclass
class KernelForms:
    """What ``weights="auto"`` chooses between for one kernel: ``forms`` maps ``compressed`` and
    ``decoded`` to the kernel lowered so (``.func``: the unscheduled PrimFunc, whose parameters
    read ``.used`` keys, then ``.shape_args``, then write ``.out_types``); ``arrays`` holds the
    weight parameters either reads, by name (the key without ``p:``)."""

    name: str
    node: str
    forms: dict[str, _LoweredKernel]
    arrays: dict[str, np.ndarray]


# ---------------------------------------------------------------------------
# Graph -> Relax


def lower_graph(graph: Graph, target, bindings: dict[str, int], dynamic: Collection[str] = (),
                index_dtype: str = "int32", weights: "str | Mapping[str, str]" = "compressed",
                choose: "Callable[[KernelForms], str] | None" = None) -> Lowered:
    """Lower ``graph`` for ``target`` (a TargetSpec) with symbolic dims bound by ``bindings``.

    The symbols in ``dynamic`` stay symbolic in the kernels; their ``bindings`` (example
    sizes) only count FLOPs; in the kernels they are ``index_dtype`` variables.
    ``weights`` (one of :data:`WEIGHT_FORMS`, or a mapping from kernel name to one of them,
    ``compressed`` for kernels it does not name) says how compressed weights are held: on CPU
    targets ``compressed`` keeps them encoded (see :mod:`slimgraph.backends.tvm.encoded`).
    ``weights="auto"`` lowers each kernel that stores a weight sparse a second time with its
    weights dense and keeps the form ``choose`` (given both, :class:`KernelForms`) names; kernels
    storing nothing compressed are lowered once and never reach ``choose``, and encoded weights
    (k-means, int4, log2) stay encoded: a float copy of them ships only with ``weights="decoded"``.

    Raises BackendError naming every op without a lowering (with counts and
    where each first occurs) before doing any work.
    """
    table = lowering_table()
    _check_supported(graph, table)
    from tvm import tirx

    forms = dict(weights) if isinstance(weights, Mapping) else {}
    default = "compressed" if isinstance(weights, Mapping) else weights
    auto = default == AUTO
    bad = sorted({f for f in ("compressed" if auto else default, *forms.values()) if f not in WEIGHT_FORMS})
    if bad:
        raise BackendError(f"weights: {bad[0]!r} is no weight form; valid: {', '.join((*WEIGHT_FORMS, AUTO))}")
    if auto and choose is None:
        raise BackendError('weights="auto" needs a chooser of each kernel\'s form (see backends/tvm/weight_forms.py)')
    params = _ParamTable()
    encodings: dict[int, Encoding] = {}  # id(Value) of an encoded constant weight -> its encoding
    dynamic = frozenset(dynamic)
    kernel_vars = {s: tirx.Var(s, index_dtype) for s in sorted(dynamic)}
    env: dict[int, tuple[str, TensorType]] = {}  # id(Value) -> (key, type concrete but for dynamic symbols)
    consts: dict[int, np.ndarray] = {}
    inputs = []
    for v in graph.inputs:
        t = concrete_type(v.type, bindings, dynamic)
        env[id(v)] = ("in:" + v.name, t)
        inputs.append(("in:" + v.name, t))
    kernels: list[KernelInfo] = []
    steps: list = []
    prim_funcs: dict[str, object] = {}
    shared: dict[int, list[tuple[object, str]]] = {}  # structural hash -> [(PrimFunc, its name)]
    for node in graph.nodes:
        known = [consts.get(id(v)) for v in node.inputs]
        decoded = _decoded(node, known)
        if node.op == "const" or decoded is not None:
            array = node.attrs["value"] if decoded is None else decoded
            consts[id(node.output)] = array
            encoding = None if target.is_gpu else _encoding(node, array, known)
            if encoding is not None:
                encodings[id(node.output)] = encoding
            t = concrete_type(node.output.type, bindings, dynamic)
            env[id(node.output)] = (params.add(node.output.name, array), t)
            continue
        if node.op in VIEW_OPS:
            src_key, _ = env[id(node.inputs[0])]
            t = concrete_type(node.output.type, bindings, dynamic)
            env[id(node.output)] = ("v:" + node.output.name, t)
            steps.append(ViewStep(src_key, "v:" + node.output.name, t))
            continue
        name = _kernel_name(len(kernels), node)
        form = forms.get(name, default)

        def lower_as(compress: bool) -> _LoweredKernel:
            builder = _KernelBuilder(name, params, kernel_vars)
            builder.compress = compress
            args = [builder.read(*env[id(v)], consts.get(id(v)), encodings.get(id(v))) for v in node.inputs]
            out_types = [concrete_type(v.type, bindings, dynamic) for v in node.outputs]
            flops_box = [0]
            outs = _lower_node(node, args, [consts.get(id(v)) for v in node.inputs], out_types, target, builder,
                               table, bindings, flops_box)
            outs += [ok for ok, _ in builder.checks]
            out_types = out_types + [TensorType(DType.bool, ())] * len(builder.checks)
            func, used, shape_args = _make_prim_func(builder, outs, out_types)
            return _LoweredKernel(builder, func, used, shape_args, out_types, flops_box[0])

        chosen = lower_as(not target.is_gpu and form != "decoded")
        taken = "compressed" if chosen.builder.stores_compressed else "decoded" if forms.get(name) == "decoded" else ""
        # a float copy of a k-means, int4 or log2 weight ships only where the user asks for it
        # (weights="decoded"); the measured choice is sparse against dense, which is the weight as it came
        if auto and chosen.builder.stores_compressed and not chosen.builder.encodings:
            decoded = lower_as(False)
            arrays = {k[2:]: params.arrays[k[2:]] for k in (*chosen.used, *decoded.used) if k.startswith("p:")}
            taken = choose(KernelForms(name, node.describe(), {"compressed": chosen, "decoded": decoded}, arrays))
            chosen = decoded if taken == "decoded" else chosen
        builder, func, used, shape_args, out_types = (chosen.builder, chosen.func, chosen.used, chosen.shape_args,
                                                      chosen.out_types)
        for v, t in zip(node.outputs, out_types):
            env[id(v)] = ("v:" + v.name, t)
        check_keys = [f"c:{name}.{i}" for i in range(len(builder.checks))]
        func_name = _share(shared, func, name)
        if func_name == name:
            prim_funcs[name] = func.with_attr("global_symbol", name)
        info = KernelInfo(
            name=name,
            func=func_name,
            ops=_ops_of(node),
            node=node.describe(),
            flops=chosen.flops,
            args=used,
            outs=["v:" + v.name for v in node.outputs] + check_keys,
            out_types=out_types,
            anchor=node.attrs.get("anchor", "") if node.op == "fused" else node.op,
            weights=taken,
            checks=[(key, message) for key, (_, message) in zip(check_keys, builder.checks)],
            shape_args=shape_args,
        )
        kernels.append(info)
        steps.append(info)
    used_params = {k for info in kernels for k in info.args if k.startswith("p:")}
    used_params |= {env[id(v)][0] for v in graph.outputs if env[id(v)][0].startswith("p:")}
    used_params |= {s.src for s in steps if isinstance(s, ViewStep) and s.src.startswith("p:")}
    param_list = [(k[2:], _storable(a)) for k, a in ((("p:" + n), a) for n, a in params.arrays.items()) if k in used_params]
    outputs = [env[id(v)][0] for v in graph.outputs]
    output_types = [env[id(v)][1] for v in graph.outputs]
    shape_vars = {s: tirx.Var(s, "int64") for s in sorted(dynamic)}
    lowered = Lowered(None, inputs, param_list, outputs, output_types, kernels, steps, shape_vars, index_dtype)
    lowered.mod = _build_relax(lowered, prim_funcs, relax_asserts=target.is_gpu)
    return lowered


def assert_checks(mod, kernels: Sequence[KernelInfo]):
    """Append to each CPU kernel with index checks a TIR assert of each check's bool (its last
    outputs). Done after scheduling, which works on blocks and would not keep a bare statement;
    an assert in the kernel costs far less than the Relax assert, a Python callback (8 us)."""
    from tvm import tirx
    from tvm.ir import StringImm

    done = set()
    for k in kernels:
        if not k.checks or k.func in done:
            continue  # a shared kernel asserts once, with the message of its first call site
        done.add(k.func)
        func = mod[k.func]
        oks = func.params[len(func.params) - len(k.checks) :]
        # tirx.AssertStmt's Python signature names (kind, condition) but passes them on in
        # that order to a constructor taking (condition, kind): so condition first here
        asserts = [tirx.AssertStmt(tirx.BufferLoad(ok, []), StringImm("IndexError"), [StringImm(message)])
                   for ok, (_, message) in zip(oks, k.checks)]
        mod[k.func] = func.with_body(tirx.SeqStmt([func.body, *asserts]))
    return mod


def concrete_type(t: TensorType, bindings: dict[str, int], keep: Collection[str] = ()) -> TensorType:
    """``t`` with every symbolic dim evaluated but the symbols in ``keep`` (unbound symbols are an error)."""
    missing = sorted(s for s in t.symbols if s not in bindings and s not in keep)
    if missing:
        raise BackendError(f"cannot compile {t}: no size for {', '.join(missing)}; pass example inputs or shapes")
    if not keep or not t.symbols & set(keep):
        return t.with_shape(concrete(d, bindings) for d in t.shape)
    return t.with_shape(_partial_dim(d, bindings, keep) for d in t.shape)


def _partial_dim(dim, bindings: dict[str, int], keep: Collection[str]):
    if isinstance(dim, int):
        return dim
    out = 1
    for part in dim.split("*"):
        out = dim_mul(out, part if part in keep else concrete(part, bindings))
    return out


def _lower_node(node: Node, args, arg_consts, out_types, target, builder, table, bindings, flops_box) -> list:
    dynamic = builder.vars.keys()
    if node.op != "fused":
        in_types = [concrete_type(v.type, bindings, dynamic) for v in node.inputs]
        flops_box[0] += _flops(node, in_types, out_types, bindings)
        return _call(table, node.op, args, arg_consts, node.attrs, in_types, out_types, target, builder, node)
    body = node.body
    inner = dict(bindings)
    for param, t in zip(body.inputs, (_concrete_arg(a) for a in args)):
        for dim, size in zip(param.type.shape, t):
            if size is not None:  # a dynamic dim's symbol is the graph's own, already in bindings
                bind_dim(dim, size, inner)
    tensors: dict[int, object] = {id(p): a for p, a in zip(body.inputs, args)}
    values: dict[int, np.ndarray | None] = {id(p): c for p, c in zip(body.inputs, arg_consts)}
    for inner_node in body.nodes:
        known = [values.get(id(v)) for v in inner_node.inputs]
        decoded = _decoded(inner_node, known)
        if inner_node.op == "const" or decoded is not None:
            array = inner_node.attrs["value"] if decoded is None else decoded
            encoding = _encoding(inner_node, array, known) if builder.compress else None
            if encoding is not None and encoding not in builder.encodings:
                builder.encodings.append(encoding)
            tensors[id(inner_node.output)] = builder.new_param(array, inner_node.output.name)
            values[id(inner_node.output)] = array
            continue
        in_types = [concrete_type(v.type, inner, dynamic) for v in inner_node.inputs]
        outs_t = [concrete_type(v.type, inner, dynamic) for v in inner_node.outputs]
        flops_box[0] += _flops(inner_node, in_types, outs_t, inner)
        results = _lower_node(
            inner_node, [tensors[id(v)] for v in inner_node.inputs], [values.get(id(v)) for v in inner_node.inputs],
            outs_t, target, builder, table, inner, [0],
        ) if inner_node.op == "fused" else _call(
            table, inner_node.op, [tensors[id(v)] for v in inner_node.inputs],
            [values.get(id(v)) for v in inner_node.inputs], inner_node.attrs, in_types, outs_t, target, builder,
            inner_node,
        )
        for v, r in zip(inner_node.outputs, results):
            tensors[id(v)] = r
            values[id(v)] = None
    return [tensors[id(v)] for v in body.outputs]


def _concrete_arg(tensor) -> tuple[int | None, ...]:
    """The sizes of a TE tensor's dims, None for a dynamic one."""
    return tuple(_static(d) for d in tensor.shape)


def _static(dim) -> int | None:
    from tvm import tirx

    return int(dim) if isinstance(dim, (int, tirx.IntImm)) else None


def _flops(node: Node, in_types: list[TensorType], out_types: list[TensorType], bindings: dict[str, int]) -> int:
    """FLOPs of a node at the sizes of ``bindings`` (a dynamic dim counts at its example size)."""
    return int(node.opdef.flops([concrete_type(t, bindings) for t in in_types],
                                [concrete_type(t, bindings) for t in out_types], node.attrs))


def _call(table, op, args, arg_consts, attrs, in_types, out_types, target, builder, node) -> list:
    call = OpCall(op, list(args), list(arg_consts), dict(attrs), in_types, out_types, target, builder, node.describe())
    try:
        result = table[op](call)
    except SlimgraphError:  # the node's own fault (e.g. a constant index out of range), already said
        raise
    except Exception as exc:  # a lowering failing on a node its types admitted is a bug worth locating
        raise BackendError(f"{node.describe()}: lowering to TVM failed: {type(exc).__name__}: {exc}") from exc
    results = list(result) if isinstance(result, (list, tuple)) else [result]
    if len(results) != len(out_types):
        raise BackendError(f"{node.describe()}: lowering returned {len(results)} outputs, expected {len(out_types)}")
    return results


def _share(shared: dict[int, list[tuple[object, str]]], func, name: str) -> str:
    """The name of a PrimFunc in ``shared`` structurally equal to ``func``; else ``func`` joins as ``name``."""
    import tvm_ffi

    candidates = shared.setdefault(tvm_ffi.structural_hash(func), [])
    for other, other_name in candidates:
        if tvm_ffi.structural_equal(func, other):
            return other_name
    candidates.append((func, name))
    return name


def _make_prim_func(builder: _KernelBuilder, outs: list, out_types: list[TensorType]):
    from tvm import te

    fixed = []
    for i, (t, ttype) in enumerate(zip(outs, out_types)):
        if isinstance(t.op, te.PlaceholderOp) or any(t.same_as(o) for o in fixed):
            # PrimFunc outputs must be computed, and distinct
            t = _copy(t, f"out{i}")
        fixed.append(t)
    reachable = _reachable_placeholders(fixed)
    used = [(ph, key) for ph, key in builder.sources if any(ph.same_as(r) for r in reachable)]
    # a dynamic symbol that no buffer holds as a whole dim (only inside N*S, or only in index
    # arithmetic) cannot be read off the buffers, so it comes in as a scalar argument, after the inputs
    buffers = [ph for ph, _ in used] + fixed
    bare = {d.name for t in buffers for d in t.shape if _static(d) is None and hasattr(d, "name")}
    shape_args = [s for s in builder.vars if s not in bare]  # unused ones cost one scalar argument
    func = te.create_prim_func([ph for ph, _ in used] + [builder.vars[s] for s in shape_args] + fixed)
    return func, [key for _, key in used], shape_args


def _copy(tensor, name: str):
    from tvm import te

    return te.compute(tensor.shape, lambda *idx: tensor(*idx), name=name)


def _reachable_placeholders(outs: list) -> list:
    from tvm import te

    seen, found, stack = set(), [], list(outs)
    while stack:
        t = stack.pop()
        op = t.op
        if op in seen:
            continue
        seen.add(op)
        if isinstance(op, te.PlaceholderOp):
            found.append(t)
        else:
            stack.extend(op.input_tensors)
    return found


def _build_relax(lowered: Lowered, prim_funcs: dict, relax_asserts: bool):
    from tvm import relax

    bb = relax.BlockBuilder()
    env: dict[str, object] = {}
    funcs = {name: bb.add_func(func, name) for name, func in prim_funcs.items()}
    params = []
    for key, t in lowered.inputs:
        env[key] = relax.Var(key[3:], _rtype(t, lowered.shape_vars))
        params.append(env[key])
    for name, array in lowered.params:
        env["p:" + name] = relax.Var(_ident(name), _rtype(TensorType.of_array(array), {}))
        params.append(env["p:" + name])
    with bb.function("main", params):
        with bb.dataflow():
            for step in lowered.steps:
                if isinstance(step, ViewStep):
                    src, shape = env[step.src], _shape(step.type, lowered.shape_vars)
                    same = _dims_key(src.ty.shape) == _dims_key(shape)
                    env[step.out] = src if same else bb.emit(relax.op.reshape(src, shape))
                    continue
                gv = funcs[step.func]
                sinfo = [_rtype(t, lowered.shape_vars) for t in step.out_types]
                sizes = [lowered.shape_vars[s].astype(lowered.index_dtype) for s in step.shape_args]
                args = [env[k] for k in step.args] + [relax.prim_value(size) for size in sizes]
                call = relax.call_tir(gv, args, sinfo if len(sinfo) > 1 else sinfo[0])
                result = bb.emit(call)
                if len(sinfo) == 1:
                    env[step.outs[0]] = result
                else:
                    for i, key in enumerate(step.outs):
                        env[key] = bb.emit(relax.TupleGetItem(result, i))
            outs = [env[k] for k in lowered.outputs]
            result = outs[0] if len(outs) == 1 else relax.Tuple(outs)
            gv_out = bb.emit_output(result)
            checks = [(bb.emit_output(env[key]), message)
                      for step in lowered.kernels for key, message in step.checks] if relax_asserts else []
        # asserts are impure, so they follow the dataflow block; every kernel clamped its reads and writes
        for ok, message in checks:
            bb.emit(relax.op.assert_op(ok, [], message.replace("{", "{{").replace("}", "}}")))
        bb.emit_func_output(gv_out)
    return bb.get()


def _rtype(t: TensorType, shape_vars: dict):
    from tvm import relax

    return relax.TensorType(_shape(t, shape_vars), TVM_DTYPE[t.dtype])


def _dims_key(shape) -> list:
    """A shape's dims comparable across TE, Relax and Python: ints, else their text."""
    return [d if isinstance(d, int) else _static(d) if _static(d) is not None else str(d) for d in shape]


def _shape(t: TensorType, shape_vars: dict) -> tuple:
    """TE/Relax dims of ``t``: ints, and products of ``shape_vars`` for dynamic dims."""
    return tuple(d if isinstance(d, int) else concrete(d, shape_vars) for d in t.shape)


def _storable(array: np.ndarray) -> np.ndarray:
    """Arrays as TVM holds them: int4 widened to one int8 per value."""
    return array.astype(np.int8) if TensorType.of_array(array).dtype is DType.int4 else array


def _check_supported(graph: Graph, table: dict) -> None:
    missing: dict[str, list] = {}

    def visit(g: Graph) -> None:
        for node in g.nodes:
            if node.op == "fused":
                visit(node.body)
            elif node.op not in table and node.op not in DRIVER_OPS:
                missing.setdefault(node.op, []).append(node)

    visit(graph)
    if missing:
        parts = [f"{op} (x{len(nodes)}, first at {nodes[0].describe()})" for op, nodes in sorted(missing.items())]
        raise BackendError(f"the TVM backend has no lowering for {len(missing)} op(s): {'; '.join(parts)}")


def _ops_of(node: Node) -> tuple[str, ...]:
    if node.op != "fused":
        return (node.op,)
    return tuple(op for n in node.body.nodes if n.op != "const" for op in _ops_of(n))


def _kernel_name(index: int, node: Node) -> str:
    ops = [op for op in _ops_of(node) if op not in VIEW_OPS]
    label = "_".join(dict.fromkeys(ops))[:40] or node.op
    return _ident(f"k{index}_{label}")


def _ident(text: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return out if out and not out[0].isdigit() else "v" + out

