"""The reference interpreter: runs any valid graph with the ops' numpy implementations.

It is the oracle every pass and backend is tested against, so it checks what
it is given (input count, dtypes, shapes against symbolic dims) and what each
op returns (dtype and shape against the node's declared type).

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType, run
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", ("N", 2)))
    >>> g.set_outputs([g.call("relu", x)])
    >>> run(g, x=np.array([[-1.0, 2.0]], np.float32))[0]
    array([[0., 2.]], dtype=float32)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from slimgraph.errors import IndexOutOfRangeError, InterpreterError, SlimgraphError
from slimgraph.ir.types import bind_dim, concrete, format_shape


def run(graph, *args: Any, **kwargs: Any) -> list[np.ndarray]:
    """Run ``graph`` on numpy arrays given positionally or by input name.

    Returns the outputs as a list of arrays. Symbolic dims are bound from the
    inputs and must agree everywhere they appear.
    """
    feeds = _bind_inputs(graph, args, kwargs)
    bindings: dict[str, int] = {}
    env: dict[int, np.ndarray] = {}
    for value in graph.inputs:
        array = _check_array(feeds[value.name], value, bindings, f"input %{value.name}")
        env[id(value)] = array
    remaining = {id(v): len(v.users) for v in graph.values()}
    keep = {id(v) for v in graph.outputs}
    for node in graph.nodes:
        args_ = [env[id(v)] for v in node.inputs]
        opdef = node.opdef
        try:
            with np.errstate(all="ignore"):
                result = opdef.impl(*args_, **node.attrs)
        except IndexOutOfRangeError as exc:  # the data's fault, not the graph's: say where it happened
            raise IndexOutOfRangeError(f"{node.describe()}: {exc}") from None
        except SlimgraphError:
            raise
        except Exception as exc:  # an impl failing on data its types admitted
            raise InterpreterError(f"{node.describe()} failed: {type(exc).__name__}: {exc}") from exc
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(node.outputs):
            raise InterpreterError(f"{node.describe()} returned {len(results)} outputs, expected {len(node.outputs)}")
        for out, array in zip(node.outputs, results):
            env[id(out)] = _check_array(np.asarray(array), out, bindings, node.describe())
        for value in node.inputs:
            remaining[id(value)] -= 1
            if remaining[id(value)] == 0 and id(value) not in keep:
                env.pop(id(value), None)
    return [env[id(v)] for v in graph.outputs]


def _bind_inputs(graph, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    names = [v.name for v in graph.inputs]
    if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
        kwargs, args = args[0], ()
    if len(args) > len(names):
        raise InterpreterError(f"graph @{graph.name} takes {len(names)} inputs, got {len(args)}")
    feeds = dict(zip(names, args))
    for key, array in kwargs.items():
        if key not in names:
            raise InterpreterError(f"graph @{graph.name} has no input {key!r}; inputs: {', '.join(names)}")
        if key in feeds:
            raise InterpreterError(f"input {key!r} given twice")
        feeds[key] = array
    missing = [n for n in names if n not in feeds]
    if missing:
        raise InterpreterError(f"graph @{graph.name}: missing inputs {', '.join(missing)}")
    return feeds


def _check_array(array: Any, value, bindings: dict[str, int], where: str) -> np.ndarray:
    if hasattr(array, "detach") and hasattr(array, "numpy"):  # a torch tensor
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    declared = value.type
    if array.dtype != declared.dtype.numpy:
        raise InterpreterError(f"{where}: got dtype {array.dtype}, expected {declared.dtype.name} ({declared})")
    if array.ndim != declared.rank or not all(
        bind_dim(d, int(n), bindings) for d, n in zip(declared.shape, array.shape)
    ):
        raise InterpreterError(
            f"{where}: got shape {format_shape(array.shape)}, expected {format_shape(declared.shape)}"
            + (f" with {', '.join(f'{k}={v}' for k, v in sorted(bindings.items()))}" if bindings else "")
        )
    return array


def random_inputs(graph_or_types, seed: int = 0, dim: int = 2) -> list[np.ndarray]:
    """Seeded sample inputs for a graph (or a list of input TensorTypes): normal
    floats, small ints (0..3, valid indices for any axis of 4 or more), random
    bools; every symbolic dimension symbol is bound to ``dim``."""
    types = [v.type for v in graph_or_types.inputs] if hasattr(graph_or_types, "inputs") else list(graph_or_types)
    rng = np.random.default_rng(seed)
    arrays = []
    for t in types:
        shape = tuple(concrete(d, default=dim) for d in t.shape)
        if t.dtype.is_float:
            arrays.append(rng.standard_normal(shape).astype(t.dtype.numpy))
        elif t.dtype.name == "bool":
            arrays.append(rng.random(shape) < 0.5)
        else:
            arrays.append(rng.integers(0, 4, shape).astype(t.dtype.numpy))
    return arrays
