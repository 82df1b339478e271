"""Passes: the registry, pipelines as text, the pass manager and its
instruments, the pattern-rewrite API, and the built-in passes.

Importing this package registers the built-in passes (``canonicalize``,
``cse``, ``dce``, ``fold-constants``, ``fuse``, ``prune``, ``share-weights``,
``quantize``, ``lower-quantized``, ``reestimate-batch-norms``, ``bf16``) and the
``default`` pipeline. A run's :class:`PassContext` carries what passes need
besides the graph (calibration data, the target).

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> from slimgraph.passes import run_pipeline
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (4,)))
    >>> g.set_outputs([g.call("relu", g.call("mul", x, g.const(np.float32(1))))])
    >>> out, report = run_pipeline(g, "default")
    >>> [n.op for n in out.nodes]
    ['relu']
"""

from slimgraph.passes.errors import (
    NumericsError,
    OptionValueError,
    PassFailedError,
    PipelineError,
    PipelineSyntaxError,
    RewriteError,
    UnknownOptionError,
    UnknownPassError,
)
from slimgraph.passes.context import PassContext
from slimgraph.passes.registry import Pass, PassInfo, PassOption, get_pass, option, register_pass, registered_passes
from slimgraph.passes.pattern import Any, Const, Match, Pat, RewriteRule, apply_rewrites, replace_node, rewrite
from slimgraph.analysis.stats import GraphStats, StatsDiff, graph_stats
from slimgraph.passes.pipeline import format_pipeline, named_pipelines, parse_pipeline, register_pipeline
from slimgraph.passes.manager import (
    DumpInstrument,
    Instrument,
    NumericsInstrument,
    PassManager,
    PassRecord,
    PipelineReport,
    StatsInstrument,
    TimingInstrument,
    VerifyInstrument,
    random_inputs,
    run_pipeline,
)
from slimgraph.passes.dce import DeadCodeElimination
from slimgraph.passes.cse import CommonSubexpressionElimination
from slimgraph.passes.canonicalize import Canonicalize
from slimgraph.passes.fold_constants import FoldConstants
from slimgraph.passes.fuse import FuseRegions
from slimgraph.passes.merge_linears import MergeLinears
from slimgraph.passes.prune import Prune
from slimgraph.passes.share_weights import ShareWeights
from slimgraph.passes.calibrate import CalibrationError, CalibrationTable, calibrate
from slimgraph.passes.quantize import Quantize, quantize_graph
from slimgraph.passes.lower_quantized import LowerQuantized
from slimgraph.passes.bf16 import ToBf16
from slimgraph.passes.batch_norms import ReestimateBatchNorms
from slimgraph.passes.skip_blocks import SkipBlocks

__all__ = [
    "Any",
    "apply_rewrites",
    "calibrate",
    "CalibrationError",
    "CalibrationTable",
    "Canonicalize",
    "CommonSubexpressionElimination",
    "Const",
    "DeadCodeElimination",
    "DumpInstrument",
    "FoldConstants",
    "format_pipeline",
    "FuseRegions",
    "MergeLinears",
    "get_pass",
    "graph_stats",
    "GraphStats",
    "Instrument",
    "LowerQuantized",
    "ToBf16",
    "Match",
    "named_pipelines",
    "NumericsError",
    "NumericsInstrument",
    "option",
    "OptionValueError",
    "parse_pipeline",
    "Pass",
    "PassContext",
    "PassFailedError",
    "PassInfo",
    "PassManager",
    "PassOption",
    "PassRecord",
    "Pat",
    "PipelineError",
    "PipelineReport",
    "PipelineSyntaxError",
    "Prune",
    "Quantize",
    "quantize_graph",
    "random_inputs",
    "ReestimateBatchNorms",
    "register_pass",
    "register_pipeline",
    "registered_passes",
    "replace_node",
    "rewrite",
    "RewriteError",
    "RewriteRule",
    "run_pipeline",
    "ShareWeights",
    "SkipBlocks",
    "StatsDiff",
    "StatsInstrument",
    "TimingInstrument",
    "UnknownOptionError",
    "UnknownPassError",
    "VerifyInstrument",
]
