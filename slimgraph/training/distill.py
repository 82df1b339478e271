"""``finetune``: recover the accuracy a compressed graph lost, by distillation from the model before compression.

The graph is trained through the torch round trip (``to_torch``, an
optimizer, ``load_weights``) and comes back as a graph of the same structure:

- **Teacher.** By default the graph's ``origin``: the uncompressed graph that
  the compressing passes (``prune``, ``quantize``, ``share-weights``) record
  on their result, kept through clones, pipelines and fine-tuning (not
  through ``save``/``load``: pass ``teacher=`` for a loaded graph). A
  teacher may also be a Graph, a torch module, or any callable on numpy
  arrays (a ``CompiledModel``); its outputs are computed once, before training.
- **Losses.** ``"kd"``: Kullback-Leibler divergence between the softened
  outputs (softmax at ``temperature``; scaled by T^2 so the gradient keeps its
  size) of the first output; with labels, ``alpha * KD + (1 - alpha) * CE``.
  ``"ce"``: cross-entropy on the labels alone (no teacher). ``"mse"``: mean
  squared error to the teacher's first output (for models that are not
  classifiers). Class scores are along the last axis.
- **What stays.** Weights that are exactly zero (pruned) get zero gradients and
  stay zero; integer weights of a QDQ graph train as float latents rounded to
  their grid in every forward pass (straight-through estimator), activation
  ``quantize`` s round the same way, and they come back as integer codes on the
  same scales: quantization-aware fine-tuning. Batch-norm statistics are kept
  (re-estimate them before, on the compressed graph).

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> from slimgraph.passes import Prune
    >>> g = Graph("lin"); x = g.add_input("x", TensorType("f32", ("N", 4)))
    >>> w = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    >>> g.set_outputs([g.call("linear", x, g.const(w, name="fc.weight"))])
    >>> sparse = Prune(sparsity=0.5)(g)
    >>> sparse.origin is g
    True
    >>> data = np.random.default_rng(1).standard_normal((32, 4)).astype(np.float32)
    >>> tuned = finetune(sparse, data, epochs=2, progress=False)
    >>> bool(((tuned.value("fc.weight").const_value == 0) == (sparse.value("fc.weight").const_value == 0)).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping

import numpy as np

from slimgraph.arguments import check_int, check_positive, is_array
from slimgraph.errors import SlimgraphError
from slimgraph.ir.graph import Graph

Loss = Literal["kd", "ce", "mse"]
LOSSES = ("kd", "ce", "mse")


class FinetuneError(SlimgraphError):
    """Fine-tuning asked for something it cannot do: a loss without what it needs, data that does not fit."""


@dataclass(frozen=True)
class TrainData:
    """Training inputs (one array per graph input, rows aligned) and optional integer labels.

    Example::

        >>> from slimgraph.ir import Graph, TensorType
        >>> g = Graph(); g.set_outputs([g.add_input("x", TensorType("f32", ("N", 2)))])
        >>> d = TrainData.of(g, (np.zeros((5, 2), np.float32), np.arange(5)))
        >>> len(d), d.labels.tolist()
        (5, [0, 1, 2, 3, 4])
    """

    inputs: tuple[np.ndarray, ...]
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.inputs[0])

    @classmethod
    def of(cls, graph: Graph, data: Any) -> "TrainData":
        """``data`` as training data for ``graph``: ``(x, y)`` (x an array, or a tuple of arrays
        for several inputs; y integer labels), inputs alone (an array), or an iterable of input
        batches as calibration data is given (unlabelled)."""
        from slimgraph.passes.calibrate import batch_feeds

        if isinstance(data, TrainData):
            return data
        names = [v.name for v in graph.inputs]
        if isinstance(data, tuple) and len(data) == 2 and _labels_like(data[1]):
            x, y = data
            arrays = tuple(x) if isinstance(x, (tuple, list)) else (x,)
            feeds = batch_feeds(graph, arrays, 0)
            labels = np.asarray(_numpy(y)).astype(np.int64)
            out = cls(tuple(feeds[n] for n in names), labels)
        elif is_array(data):
            feeds = batch_feeds(graph, _numpy(data), 0)
            out = cls(tuple(feeds[n] for n in names), None)
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
            batches = [batch_feeds(graph, b, i) for i, b in enumerate(data)]
            if not batches:
                raise FinetuneError("train_data is empty: give at least one batch of inputs")
            out = cls(tuple(np.concatenate([b[n] for b in batches]) for n in names), None)
        else:
            raise FinetuneError(
                f"train_data: give (inputs, labels), inputs (an array) or a list of input batches, "
                f"got a {type(data).__name__}"
            )
        rows = {len(a) for a in out.inputs} | ({len(out.labels)} if out.labels is not None else set())
        if len(rows) != 1 or not len(out):
            raise FinetuneError(f"train_data: inputs and labels must have the same number of rows (> 0), got {rows}")
        return out


def finetune(
    graph: Any,
    train_data: Any,
    teacher: Any = None,
    *,
    epochs: int = 3,
    loss: Loss = "kd",
    temperature: float = 4.0,
    alpha: float = 0.5,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> Graph:
    """``graph`` (a Graph, or a CompiledModel's graph) fine-tuned on ``train_data``; see the module docstring.

    ``train_data`` is ``(x, y)``, inputs alone (distillation needs no labels),
    or a list of input batches. ``alpha`` weighs KD against CE when labels are
    given. Adam at ``lr``, ``batch_size`` rows a step, shuffled with ``seed``;
    ``progress`` draws a bar on stderr. Returns a new graph with the same
    structure, constants names and quantization grids, and the same ``origin``.
    """
    import torch

    student_graph = graph.ir if not isinstance(graph, Graph) and isinstance(getattr(graph, "ir", None), Graph) else graph
    if not isinstance(student_graph, Graph):
        if hasattr(graph, "ir"):  # a compiled model loaded from a folder saved without its graph
            raise FinetuneError("finetune: this compiled model carries no graph (its folder was saved without "
                                "ir=True); fine-tune the graph it was compiled from, or save with save(dir, ir=True)")
        raise FinetuneError(f"finetune: give a slimgraph Graph or a CompiledModel, got a {type(graph).__name__}")
    _check_options(loss, epochs, temperature, alpha, lr, batch_size)
    data = TrainData.of(student_graph, train_data)
    if loss == "ce" and data.labels is None:
        raise FinetuneError("loss='ce' needs labels: give train_data=(inputs, labels)")
    teacher = teacher if teacher is not None else student_graph.origin
    if loss != "ce" and teacher is None:
        raise FinetuneError(
            f"loss={loss!r} needs a teacher, and @{student_graph.name} records no origin (it was not compressed "
            "by a pass in this process, or was loaded from a file): pass teacher= (the uncompressed model)"
        )
    targets = _teacher_outputs(teacher, data, batch_size) if loss != "ce" else None

    with torch.random.fork_rng():  # the seed is this call's, not the caller's global generator
        torch.manual_seed(seed)
        return _train(student_graph, logits_graph(student_graph), data, targets, loss, epochs, temperature, alpha,
                      lr, batch_size, seed, progress)


def _train(student_graph: Graph, trained: Graph, data: "TrainData", targets, loss: str, epochs: int,
           temperature: float, alpha: float, lr: float, batch_size: int, seed: int, progress: bool) -> Graph:
    """``student_graph`` with the weights of ``trained`` (it, or it without a trailing softmax) after training."""
    import torch

    from slimgraph.backends.torch import load_weights, to_torch

    # the origin tells pruned zeros from codes that rounding made zero; without it every zero is held
    module = to_torch(trained, keep_zeros=student_graph.origin or True, quant_aware=True)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise FinetuneError(f"@{student_graph.name} has no trainable weights")
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.from_numpy(np.ascontiguousarray(a)) for a in data.inputs]
    labels = torch.from_numpy(data.labels) if data.labels is not None else None
    steps = -(-len(data) // batch_size)
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs * steps, desc=f"finetune @{student_graph.name} ({loss})", disable=not progress,
               leave=False)
    module.train()
    try:
        for _ in range(epochs):
            for idx in torch.randperm(len(data), generator=generator).split(batch_size):
                optimizer.zero_grad()
                out = _first(module(*(x[idx] for x in inputs)))
                value = _loss(loss, out, targets[idx] if targets is not None else None,
                              labels[idx] if labels is not None else None, temperature, alpha)
                value.backward()
                optimizer.step()
                bar.set_postfix(loss=f"{value.item():.4f}", refresh=False)
                bar.update()
    finally:
        bar.close()
    module.eval()
    return load_weights(student_graph, module)


def _loss(kind: str, out, target, labels, temperature: float, alpha: float):
    import torch.nn.functional as F

    if kind == "mse":
        return F.mse_loss(out, target)
    classes = out.shape[-1]
    logits = out.reshape(-1, classes)
    ce = F.cross_entropy(logits, labels.reshape(-1)) if labels is not None else None
    if kind == "ce":
        return ce
    soft = F.log_softmax(target.reshape(-1, classes) / temperature, dim=-1)
    kd = F.kl_div(F.log_softmax(logits / temperature, dim=-1), soft, log_target=True,
                  reduction="batchmean") * temperature**2
    return kd if ce is None else alpha * kd + (1.0 - alpha) * ce


def _teacher_outputs(teacher: Any, data: TrainData, batch_size: int):
    """The teacher's first output on every training row (a float tensor), computed once."""
    import torch

    from slimgraph.backends.torch import to_torch

    if isinstance(teacher, Graph):
        teacher = to_torch(logits_graph(teacher))
    if not callable(teacher):
        raise FinetuneError(f"teacher: give a Graph, a torch module or a callable model, got a {type(teacher).__name__}")
    is_module = isinstance(teacher, torch.nn.Module)
    # a model compiled for one batch size takes chunks of exactly that size: the last one is padded
    fixed = _fixed_batch(teacher)
    chunk = fixed or batch_size
    was_training = is_module and teacher.training
    outs = []
    try:
        if is_module:
            teacher.eval()
        with torch.no_grad():
            for start in range(0, len(data), chunk):
                part = [a[start : start + chunk] for a in data.inputs]
                rows = len(part[0])
                if fixed:
                    part = [np.concatenate([p, np.zeros((fixed - rows, *p.shape[1:]), p.dtype)]) for p in part]
                if is_module:
                    out = _first(teacher(*(torch.from_numpy(np.ascontiguousarray(p)) for p in part)))
                else:
                    out = torch.from_numpy(np.asarray(_numpy(_first(teacher(*part)))))
                outs.append(out[:rows].to(torch.float32))
    finally:
        if was_training:
            teacher.train()  # the user's module is theirs: it leaves as it came
    return torch.cat(outs)


def _fixed_batch(teacher: Any) -> int | None:
    """The batch a compiled teacher takes, when its first input's first axis is fixed."""
    types = getattr(teacher, "input_types", None)
    if not types or not types[0].shape:
        return None
    first = types[0].shape[0]
    return first if isinstance(first, int) else None


def logits_graph(graph: Graph) -> Graph:
    """``graph`` with a trailing ``softmax`` on its first output left off: KD and CE take
    logits, and a model that ends in probabilities would be softened twice. Example::

        >>> from slimgraph.demo import demo_model
        >>> logits_graph(demo_model()).outputs[0].producer.op
        'linear'
    """
    out = graph.outputs[0]
    if out.producer is None or out.producer.op != "softmax" or out.producer.attrs.get("axis", -1) not in (
            -1, out.type.rank - 1):
        return graph
    view = graph.clone()
    view.set_outputs([view.outputs[0].producer.inputs[0], *view.outputs[1:]])
    return view


def _check_options(loss, epochs, temperature, alpha, lr, batch_size) -> None:
    if loss not in LOSSES:
        raise FinetuneError(f"loss={loss!r}: valid losses are {', '.join(LOSSES)}")
    check_int("epochs", epochs, minimum=1, error=FinetuneError)
    check_int("batch_size", batch_size, minimum=1, error=FinetuneError)
    check_positive("temperature", temperature, error=FinetuneError)
    check_positive("lr", lr, error=FinetuneError)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise FinetuneError(f"alpha={alpha!r}: must be a number in [0, 1]")


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


def _numpy(x: Any) -> Any:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def _labels_like(y: Any) -> bool:
    """Whether ``y`` reads as integer labels (an integer array), so that ``(x, y)`` is labelled data."""
    if not is_array(y):
        return False
    y = np.asarray(_numpy(y))
    return y.ndim >= 1 and np.issubdtype(y.dtype, np.integer)


def finetune_step(train_data: Any, **options: Any) -> Callable[[Graph, float], Graph]:
    """A ``finetune(graph, width) -> graph`` for :func:`slimgraph.narrow`: each narrowed variant is
    fine-tuned by :func:`finetune` on ``train_data`` (options as there; no progress bar by default).

    Example::

        >>> step = finetune_step((x_train, y_train), epochs=2)          # doctest: +SKIP
        >>> narrow(net, example, [1.0, 0.5], finetune=step)             # doctest: +SKIP
    """
    options.setdefault("progress", False)

    def step(graph: Graph, width: float) -> Graph:
        return finetune(graph, train_data, **options)

    return step
