"""Launch plans: what TVM's host code would do for each kernel, as plain data.

TVM builds an ``opencl`` model into OpenCL C kernels plus host code that
launches them; this TVM build has no OpenCL runtime, so the host code cannot
run. The host code is simple, though: for each kernel function TVM's pipeline
(just before ``MakePackedAPI``) leaves a host PrimFunc that binds buffers and
sizes, allocates scratch buffers and calls ``call_ffi_kernel(name, args...,
extents..., launch_params=[blockIdx.x, threadIdx.x, ...])``. :func:`capture`
records that module during ``tvm.compile``; :func:`launch_plans` turns each
host function into JSON-able data (kernel names, argument sources, launch
extents as small expression trees over the dynamic sizes; host loops of
launches as loops), which
:mod:`slimgraph.backends.opencl.model` replays through PyOpenCL.

Expressions are ints, variable names, or ``[op, operand, ...]`` lists;
:func:`evaluate` computes them.

Example::

    >>> evaluate(["FloorDiv", ["Add", "n", 3], 4], {"n": 9})
    3
"""

from __future__ import annotations

import contextlib
import operator
import re
from typing import Any, Iterator

from slimgraph.errors import BackendError

#: The pass before which the host functions still show their kernel launches as calls.
_CAPTURE_BEFORE = "tirx.MakePackedAPI"

_BINARY = {
    "Add": operator.add, "Sub": operator.sub, "Mul": operator.mul,
    "FloorDiv": operator.floordiv, "FloorMod": operator.mod,
    "Div": lambda a, b: int(a / b) if b else 0, "Mod": lambda a, b: a - b * int(a / b) if b else 0,
    "Min": min, "Max": max, "LT": operator.lt, "LE": operator.le, "GT": operator.gt, "GE": operator.ge,
    "EQ": operator.eq, "NE": operator.ne, "And": lambda a, b: a and b, "Or": lambda a, b: a or b,
}


def evaluate(expr: Any, env: dict[str, int]) -> int:
    """The integer value of an expression tree under ``env`` (variable name -> value)."""
    if isinstance(expr, bool) or isinstance(expr, int):
        return int(expr)
    if isinstance(expr, str):
        return env[expr]
    op, *args = expr
    values = [evaluate(a, env) for a in args]
    if op == "Select":
        return values[1] if values[0] else values[2]
    if op == "Not":
        return int(not values[0])
    if op == "Cast":
        return values[0]
    return int(_BINARY[op](*values))


@contextlib.contextmanager
def capture() -> Iterator[dict]:
    """Record the TIR module just before ``MakePackedAPI`` while ``tvm.compile`` runs in the block;
    the dict it yields holds it under ``"mod"``."""
    import tvm

    captured: dict = {}

    @tvm.ir.instrument.pass_instrument
    class _Capture:
        def run_before_pass(self, mod, info):
            if info.name == _CAPTURE_BEFORE:
                captured["mod"] = mod

    current = tvm.transform.PassContext.current()
    with tvm.transform.PassContext(opt_level=current.opt_level, config=dict(current.config),
                                   instruments=[*current.instruments, _Capture()]):
        yield captured


def launch_plans(mod, names: list[str]) -> dict[str, dict]:
    """Per kernel function in ``names``: its parameters and the launches and scratch buffers of its
    host code, as data (see the module docstring). ``mod`` is what :func:`capture` recorded."""
    return {name: _HostWalk(name, mod[name]).plan() for name in names}


def kernel_params(mod) -> dict[str, list[str]]:
    """Per device kernel: the OpenCL type of each parameter (``buffer`` or an integer dtype)."""
    out = {}
    for gv, f in mod.functions.items():
        if f.attrs is not None and "tirx.kernel_launch_params" in f.attrs:
            out[gv.name_hint] = [_param_kind(p) for p in f.params]
    return out


def _param_kind(param) -> str:
    import tvm

    ty = param.ty
    if isinstance(ty, tvm.ir.PointerType) or "handle" in str(ty):
        return "buffer"
    return str(ty.dtype)


_SECTION = re.compile(r"^// Function: (\w+)\s*$", re.M)


def split_sources(source: str) -> dict[str, str]:
    """TVM's OpenCL module source, one self-contained section per kernel, by kernel name."""
    marks = list(_SECTION.finditer(source))
    return {m.group(1): source[m.start(): (marks[i + 1].start() if i + 1 < len(marks) else len(source))]
            for i, m in enumerate(marks)}


class _HostWalk:
    """Reads one host PrimFunc into its plan; anything it does not know is a BackendError naming it."""

    def __init__(self, name: str, func):
        self.name = name
        self.func = func
        self.roots: dict[Any, tuple[str, int]] = {}  # buffer var -> ("param", index) or ("scratch", index)
        # keyed by the var's TVM handle hash: a TVM Var's == builds an expression, so a dict keyed by
        # Vars compares two wrappers of one var into an Expr and fails to tell whether they match
        self.lets: dict[int, Any] = {}
        self.steps: list[dict] = []
        self.scratch: list[dict] = []

    def plan(self) -> dict:
        import tvm

        params, shapes = [], []
        for i, p in enumerate(self.func.params):
            if isinstance(p.ty, tvm.tirx.BufferType):
                self.roots[p] = ("param", i)
                if isinstance(p.ty.elem_offset, tvm.ir.expr.Var):
                    self.lets[hash(p.ty.elem_offset)] = 0  # the runtime's buffers all start at their beginning
                params.append("buffer")
                shapes.append([self.expr(d) for d in p.ty.shape])
            else:
                params.append(str(p.ty.dtype))
                shapes.append(self.expr(p))
        self.stmt(self.func.body)
        return {"params": params, "shapes": shapes, "scratch": self.scratch, "steps": self.steps}

    def fail(self, what: str):
        raise BackendError(f"OpenCL: kernel {self.name}: its host code has {what}, which the OpenCL runtime "
                           f"does not replay")

    def stmt(self, s) -> None:
        from tvm import tirx

        if isinstance(s, tirx.SeqStmt):
            for part in s:
                self.stmt(part)
        elif isinstance(s, tirx.DeclBuffer):
            if s.buffer.elem_offset is not None and self.expr(s.buffer.elem_offset) != 0:
                self.fail(f"a buffer view at an offset ({s.buffer.name})")
            self.roots[s.buffer] = self.root(s.data)
        elif isinstance(s, tirx.AllocBuffer):
            buf = s.buffer
            if str(buf.scope()) not in ("global", ""):
                self.fail(f"a host allocation in scope {buf.scope()}")
            self.roots[buf] = ("scratch", len(self.scratch))
            self.scratch.append({"dtype": str(buf.dtype), "shape": [self.expr(d) for d in buf.shape]})
        elif isinstance(s, tirx.Bind):
            self.lets[hash(s.var)] = self.expr(s.value)
        elif isinstance(s, (tirx.AttrStmt, tirx.AssertStmt)):
            if getattr(s, "body", None) is not None:
                self.stmt(s.body)
        elif isinstance(s, tirx.Evaluate):
            self.call(s.value)
        elif isinstance(s, tirx.For):
            # a launch per iteration (the kernel takes the loop variable as a scalar)
            outer, self.steps = self.steps, []
            self.stmt(s.body)
            body, self.steps = self.steps, outer
            self.steps.append({"for": s.loop_var.name, "begin": self.expr(s.min), "extent": self.expr(s.extent),
                               "body": body})
        else:
            self.fail(f"a {type(s).__name__} statement")

    def root(self, data) -> tuple[str, int]:
        """The parameter or scratch buffer a ``buffer_data`` call or data var refers to."""
        import tvm

        if isinstance(data, tvm.ir.Call) and data.op.name == "tirx.buffer_data":
            data = data.args[0]
        for var, root in self.roots.items():
            if var.same_as(data) or getattr(var, "data", None) is not None and var.data.same_as(data):
                return root
        self.fail(f"a buffer it cannot trace to a parameter ({data})")

    def call(self, c) -> None:
        import tvm

        if isinstance(c, tvm.tirx.IntImm):
            return
        if not isinstance(c, tvm.ir.Call) or c.op.name != "tirx.call_ffi_kernel":
            self.fail(f"a call of {getattr(c.op, 'name', c)}")
        kernel = str(c.args[0].value)
        tags = [str(t) for t in c.attrs.launch_params]
        if any(t.startswith("tirx.use_dyn_shared") for t in tags):
            self.fail("dynamic shared memory")
        n_args = len(c.args) - 1 - len(tags)
        args = []
        for a in c.args[1: 1 + n_args]:
            if isinstance(a, tvm.ir.Call) and a.op.name == "tirx.buffer_data":
                args.append(["buffer", *self.root(a)])
            else:
                args.append(["scalar", self.expr(a)])
        extents = {t: self.expr(e) for t, e in zip(tags, c.args[1 + n_args:])}
        grid = [extents.get(f"blockIdx.{ax}", 1) for ax in "xyz"]
        block = [extents.get(f"threadIdx.{ax}", 1) for ax in "xyz"]
        self.steps.append({"kernel": kernel, "args": args, "grid": grid, "block": block})

    def expr(self, e) -> Any:
        """An expression tree for ``e``: bound lets inlined, TVM vars by name."""
        import tvm
        from tvm import tirx

        if isinstance(e, int):
            return e
        if isinstance(e, tirx.IntImm):
            return int(e.value)
        if isinstance(e, tvm.ir.expr.Var):
            return self.lets.get(hash(e), e.name)
        kind = type(e).__name__
        if kind in _BINARY:
            return [kind, self.expr(e.a), self.expr(e.b)]
        if kind == "Cast":
            return ["Cast", self.expr(e.value)]
        if kind == "Not":
            return ["Not", self.expr(e.a)]
        if kind == "Select":
            return ["Select", self.expr(e.condition), self.expr(e.true_value), self.expr(e.false_value)]
        self.fail(f"a {kind} expression ({e})")
