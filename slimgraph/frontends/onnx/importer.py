"""The ONNX import walk: inputs, initializers, one converter call per node, outputs.

The importer keeps an environment from ONNX tensor names to operands (Values,
or arrays known at import). Known arrays become ``const`` nodes only when a
run-time op reads them, named after their ONNX tensor, so weights keep their
initializer names and folded shape arithmetic leaves nothing behind.

Example::

    >>> import numpy as np
    >>> from onnx import TensorProto, helper
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    >>> node = helper.make_node("Relu", ["x"], ["y"], name="act")
    >>> model = helper.make_model(helper.make_graph([node], "g", [x], [y]))
    >>> g = Importer(model, "model 'g'", dynamic_batch=True).run()
    >>> [(n.op, n.loc, str(n.output.type)) for n in g.nodes]
    [('relu', 'act', 'f32[N,3]')]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import NodeProto, TensorProto, numpy_helper

from slimgraph.errors import FrontendError, GraphError, OpError, SlimgraphError
from slimgraph.frontends.onnx import converters as _converters  # noqa: F401  (fills CONVERTERS)
from slimgraph.frontends.onnx.context import NodeContext, Operand
from slimgraph.frontends.onnx.registry import CONVERTERS, DEFAULT_DOMAINS, op_key
from slimgraph.frontends.onnx.symbolic import SymbolicError, evaluate, is_symbolic
from slimgraph.frontends.onnx.typemap import value_info_type
from slimgraph.ir.graph import Graph, Value
from slimgraph.ir.registry import get_op, has_op
from slimgraph.ir.types import DType, TensorType

#: Ops that are never evaluated at import: quantization stays explicit in the graph.
NO_FOLD = frozenset({"quantize", "dequantize"})

#: ONNX ops whose outputs are never treated as known at import (see NO_FOLD).
NO_FOLD_ONNX = frozenset({"QuantizeLinear", "DequantizeLinear"})

#: Opsets of the default domain the converters are written for: from MIN_OPSET to the
#: newest the installed ``onnx`` package describes (a newer opset's ops cannot be checked).
MIN_OPSET = 6
MAX_OPSET = onnx.defs.onnx_opset_version()


class UnsupportedOpsError(FrontendError):
    """Some ops of the model have no converter. ``ops`` maps each op type to
    ``(count, first node name)``; the message lists them all."""

    def __init__(self, source: str, ops: dict[str, tuple[int, str]], opset: int):
        self.ops = ops
        lines = [
            f"  {op}: {count} node{'s' if count > 1 else ''}, first '{first}'"
            for op, (count, first) in sorted(ops.items())
        ]
        super().__init__(
            f"{source}: {len(ops)} unsupported ONNX op type{'s' if len(ops) > 1 else ''} (opset {opset}):\n"
            + "\n".join(lines)
        )


class Importer:
    """Converts one ModelProto (read only, never modified) into a Graph."""

    def __init__(self, model: onnx.ModelProto, source: str, dynamic_batch: bool = False):
        self.model = model
        self.source = source
        self.dynamic_batch = dynamic_batch
        self.opset = _default_opset(model, source)
        onnx_graph = model.graph
        self.graph = Graph(onnx_graph.name or "main")
        self._env: dict[str, Operand] = {}
        self._initializers: dict[str, TensorProto] = {t.name: t for t in onnx_graph.initializer}
        self._array_names: dict[int, str] = {}
        self._materialized: dict[str, Value] = {}
        self._consumed = {name for node in onnx_graph.node for name in node.input}
        self._consumed.update(o.name for o in onnx_graph.output)
        self._reserved = set(self._initializers) | {i.name for i in onnx_graph.input}
        self._reserved.update(name for node in onnx_graph.node for name in node.output)

    # -- the walk -------------------------------------------------------------------

    def run(self) -> Graph:
        """Convert the whole model; returns the verified graph."""
        self._check_supported()
        for vi in self.model.graph.input:
            if vi.name not in self._initializers:
                try:
                    value_type = value_info_type(vi, self.dynamic_batch)
                except FrontendError as exc:
                    raise FrontendError(f"{self.source}: {exc}") from None
                self._env[vi.name] = self.graph.add_input(vi.name, value_type)
        for index, node in enumerate(self.model.graph.node):
            self._convert(node, index)
        self.graph.set_outputs([self._graph_output(o.name) for o in self.model.graph.output])
        self.graph.verify()
        return self.graph

    def _check_supported(self) -> None:
        # The whole graph is scanned first so that one error lists every missing op.
        # A node with no converter is fine when all its inputs are known at import:
        # it folds through ONNX's own reference evaluator (shape checks such as
        # Mod of two constants in exported attention blocks).
        missing: dict[str, list] = {}
        known = set(self._initializers)
        for index, node in enumerate(self.model.graph.node):
            key = op_key(node.op_type, node.domain)
            all_known = all(not name or name in known for name in node.input)
            if all_known and key not in NO_FOLD_ONNX:
                known.update(node.output)
            if key not in CONVERTERS and not (all_known and node.domain in DEFAULT_DOMAINS):
                entry = missing.setdefault(key, [0, node.name or f"{node.op_type}_{index}"])
                entry[0] += 1
        if missing:
            raise UnsupportedOpsError(self.source, {k: (n, first) for k, (n, first) in missing.items()}, self.opset)
        self._check_attributes()

    def _check_attributes(self) -> None:
        # An attribute the op's schema (at this opset) lacks is ignored by every converter, which
        # turns a malformed model into silently wrong results (Split's opset-11 'split' at opset 18).
        problems = []
        for index, node in enumerate(self.model.graph.node):
            if node.domain not in DEFAULT_DOMAINS:
                continue
            try:
                schema = onnx.defs.get_schema(node.op_type, self.opset, "")
            except onnx.defs.SchemaError:
                continue  # not an ONNX op: the converter (or the unsupported-op scan) judges it
            unknown = [a.name for a in node.attribute if a.name not in schema.attributes]
            if unknown:
                label = node.name or f"{node.op_type}_{index}"
                valid = ", ".join(sorted(schema.attributes)) or "none"
                problems.append(
                    f"  node '{label}' ({node.op_type}): unknown attribute{'s' if len(unknown) > 1 else ''} "
                    f"{', '.join(map(repr, unknown))}; valid at opset {self.opset}: {valid}"
                )
        if problems:
            raise FrontendError(
                f"{self.source}: attributes that ONNX does not define for their op at opset {self.opset}:\n"
                + "\n".join(problems)
            )

    def _convert(self, node: NodeProto, index: int) -> None:
        ctx = NodeContext(self, node, index)
        converter = CONVERTERS.get(op_key(node.op_type, node.domain), self._fold_with_reference)
        try:
            result = converter(ctx)
        except FrontendError:
            raise
        except SlimgraphError as exc:
            message = str(exc).removeprefix(f"{ctx.loc}: ")
            if self.dynamic_batch and isinstance(exc, OpError):
                message += " (imported with dynamic_batch=True: the model may fix the batch size here)"
            raise ctx.error(message) from None
        except (IndexError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            # Attributes and inputs that contradict each other (a pads list too short, an axis out of range).
            raise ctx.error(f"malformed node ({type(exc).__name__}: {exc})") from None
        results = result if isinstance(result, (tuple, list)) else (result,)
        for i, name in enumerate(node.output):
            if not name:
                continue
            if i >= len(results) or results[i] is None:
                if self.is_consumed(name):
                    raise ctx.error(f"output {i} ('{name}') is not supported, but the model reads it")
                continue
            self._bind(name, results[i], ctx)

    def _fold_with_reference(self, ctx: NodeContext) -> list[np.ndarray]:
        """Evaluate a node with no converter whose inputs are all known, using
        onnx.reference, so that it becomes constants."""
        from onnx.reference import ReferenceEvaluator

        node = ctx.node
        feeds = {}
        for name in node.input:
            if name:
                operand = self.lookup(name, ctx)
                if not isinstance(operand, np.ndarray) or is_symbolic(operand):
                    raise ctx.error(f"no converter for {node.op_type}, and its input '{name}' is not known at import")
                feeds[name] = operand
        opset = [onnx.helper.make_opsetid(d.domain, d.version) for d in self.model.opset_import]
        single = onnx.helper.make_model(
            onnx.helper.make_graph(
                [node], "fold",
                [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in feeds.items()],
                [onnx.helper.make_empty_tensor_value_info(n) for n in node.output if n],
            ),
            opset_imports=opset,
        )
        try:
            outs = ReferenceEvaluator(single).run(None, feeds)
        except Exception as exc:  # the reference evaluator raises anything for nodes it cannot run
            raise ctx.error(f"no converter for {node.op_type}, and folding it at import failed: {exc}") from None
        return [np.asarray(o) for o in outs]

    def _bind(self, name: str, operand: Operand, ctx: NodeContext) -> None:
        if isinstance(operand, np.ndarray):
            self._env[name] = operand
            self._array_names.setdefault(id(operand), name)
            return
        if not any(operand is v for v in ctx.created) or operand.name in self._reserved:
            # Another tensor's value (or one already named): keep this name with an identity.
            operand = self.graph.add_node("identity", [operand], loc=ctx.loc, names=[name]).output
        elif self.graph.has_value(name):
            raise ctx.error(f"the tensor name '{name}' is defined twice (ONNX values are single-assignment)")
        else:
            self.graph.rename(operand, name)
        self._env[name] = operand

    def _graph_output(self, name: str) -> Value:
        operand = self.lookup(name, None)
        if isinstance(operand, np.ndarray):
            if is_symbolic(operand):
                raise FrontendError(
                    f"{self.source}: graph output '{name}' is a shape that depends on symbolic dims "
                    f"({', '.join(map(str, operand.ravel().tolist()))}); it cannot be a tensor of the graph"
                )
            return self._materialize_array(operand, name, None)
        return operand

    # -- operands -------------------------------------------------------------------

    def lookup(self, name: str, ctx: NodeContext | None) -> Operand:
        """The operand of an ONNX tensor name."""
        operand = self._env.get(name)
        if operand is not None:
            return operand
        tensor = self._initializers.get(name)
        if tensor is None:
            where = f"{ctx.where} reads" if ctx else "the graph outputs"
            raise FrontendError(
                f"{self.source}: {where} '{name}', which no graph input, initializer or earlier node defines"
                + self._checker_hint()
            )
        array = self.tensor_to_array(tensor, f"initializer '{name}'")
        self._env[name] = array
        self._array_names[id(array)] = name
        return array

    def tensor_to_array(self, tensor: TensorProto, what: str) -> np.ndarray:
        """A TensorProto's data as a (new) numpy array."""
        try:
            return numpy_helper.to_array(tensor)
        except (ValueError, TypeError, OSError, KeyError) as exc:
            extra = " (its data is stored in an external file: pass the model's path)" if tensor.data_location else ""
            raise FrontendError(f"{self.source}: cannot read {what}{extra}: {exc}") from None

    def materialize(self, operand: Operand, ctx: NodeContext) -> Value:
        """The Value of an operand; a known array becomes a const node (once per name)."""
        if isinstance(operand, Value):
            return operand
        name = self._array_names.get(id(operand))
        if is_symbolic(operand):
            raise ctx.error(
                f"'{name or 'a value'}' is the shape [{', '.join(map(str, operand.ravel().tolist()))}], which "
                "depends on symbolic dims, and this node uses it as run-time data"
            )
        return self._materialize_array(operand, name, ctx)

    def _materialize_array(self, array: np.ndarray, name: str | None, ctx: NodeContext | None) -> Value:
        if name is not None and name in self._materialized:
            return self._materialized[name]
        self.array_dtype(array, ctx, name)
        # Freezing in place lets the const node hold this array without a copy.
        array.flags.writeable = False
        if name is None or self.graph.has_value(name):
            name_hint = self._fresh_name(self._scratch_hint(ctx, "const"))
        else:
            name_hint = name
        value = self.graph.add_node("const", [], {"value": array}, names=[name_hint]).output
        if name is not None:
            self._materialized[name] = value
        return value

    def array_dtype(self, array: np.ndarray, ctx: NodeContext | None, name: str | None = None) -> DType:
        try:
            return DType.of(array.dtype)
        except GraphError:
            what = f"tensor '{name}'" if name else "a constant"
            msg = f"{what} has dtype {array.dtype}, which slimgraph does not support"
            raise (ctx.error(msg) if ctx else FrontendError(f"{self.source}: {msg}")) from None

    def is_consumed(self, name: str) -> bool:
        return name in self._consumed

    # -- building -------------------------------------------------------------------

    def emit(self, ctx: NodeContext, op: str, inputs: Sequence[Operand], attrs: dict) -> Any:
        """Add IR op ``op`` for ``ctx``'s node, or evaluate it when every input is known."""
        if not has_op(op):
            raise ctx.error(f"slimgraph has no IR op '{op}', which this conversion needs")
        if inputs and all(isinstance(x, np.ndarray) for x in inputs) and op not in NO_FOLD:
            return self._fold(ctx, op, inputs, attrs)
        values = [self.materialize(x, ctx) for x in inputs]
        node = self.graph.add_node(op, values, attrs, loc=ctx.loc)
        for out in node.outputs:
            self.graph.rename(out, self._fresh_name(self._scratch_hint(ctx, op)))
        ctx.created.extend(node.outputs)
        return node.outputs[0] if len(node.outputs) == 1 else node.outputs

    def _fold(self, ctx: NodeContext, op: str, arrays: Sequence[np.ndarray], attrs: dict) -> Any:
        if any(is_symbolic(a) for a in arrays):
            try:
                return evaluate(op, arrays, attrs)
            except SymbolicError as exc:
                raise ctx.error(str(exc)) from None
        opdef = get_op(op)
        full = opdef.normalize_attrs(attrs, ctx.loc)
        types = [self._array_type(a) for a in arrays]
        if all(t is not None for t in types):
            opdef.infer_types(types, full, ctx.loc)  # the impl may assume inputs its inference admits
        try:
            with np.errstate(all="ignore"):
                result = opdef.impl(*arrays, **full)
        except SlimgraphError:
            raise
        except Exception as exc:  # an impl failing on constants its types admitted
            raise ctx.error(f"evaluating {op} on constants failed: {type(exc).__name__}: {exc}") from None
        if isinstance(result, tuple):
            return tuple(np.asarray(r) for r in result)
        return np.asarray(result)

    @staticmethod
    def _array_type(array: np.ndarray) -> TensorType | None:
        try:
            return TensorType.of_array(array)
        except GraphError:
            return None  # a dtype slimgraph lacks (a string or complex constant): numpy still evaluates it

    def _scratch_hint(self, ctx: NodeContext | None, op: str) -> str:
        base = next((o for o in ctx.node.output if o), ctx.loc) if ctx else self.graph.name
        return f"{base}/{op}"

    def _fresh_name(self, hint: str) -> str:
        # Never take a name that an ONNX tensor will claim later.
        name, suffix = hint, 1
        while name in self._reserved or self.graph.has_value(name):
            name, suffix = f"{hint}_{suffix}", suffix + 1
        return name

    def _checker_hint(self) -> str:
        # The checker runs only to explain a failure, never to reject a model we can read.
        try:
            onnx.checker.check_model(self.model)
        except (onnx.checker.ValidationError, ValueError) as exc:
            report = " ".join(str(exc).split())
            return f" (onnx.checker: {report[:300]})"
        return ""


def _default_opset(model: onnx.ModelProto, source: str) -> int:
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions:
        raise FrontendError(f"{source}: the model imports no version of the default ONNX domain (opset_import)")
    opset = max(versions)
    if opset > MAX_OPSET:
        raise FrontendError(
            f"{source}: opset {opset} is newer than {MAX_OPSET}, the newest slimgraph reads (with onnx "
            f"{onnx.__version__}); export the model at an opset from {MIN_OPSET} to {MAX_OPSET}"
        )
    if opset < MIN_OPSET:
        raise FrontendError(
            f"{source}: opset {opset} is older than {MIN_OPSET}, the oldest slimgraph reads; "
            "upgrade it with onnx.version_converter.convert_version"
        )
    return opset

