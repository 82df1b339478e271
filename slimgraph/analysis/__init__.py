"""Read-only analyses of slimgraph graphs: channel groups for structured pruning
(:mod:`~slimgraph.analysis.channels`), residual blocks (:mod:`~slimgraph.analysis.residual`),
graph statistics (:mod:`~slimgraph.analysis.stats`) and the size report
(:mod:`~slimgraph.analysis.size_report`). They read graphs and run no passes, so passes and
reports alike can use them; reports that run passes live in :mod:`slimgraph.reports`.

Example::

    >>> from slimgraph.analysis import size_report, compare_sizes   # doctest: +SKIP
"""

from slimgraph.analysis.channels import ChannelAnalysis, ChannelGroup, analyze_channels, rewrite_channels
from slimgraph.analysis.residual import ResidualBlock, residual_blocks
from slimgraph.analysis.size_report import SizeReport, TensorSize, compare_sizes, size_report
from slimgraph.analysis.stats import GraphStats, StatsDiff, graph_stats

__all__ = [
    "ChannelAnalysis",
    "ChannelGroup",
    "GraphStats",
    "ResidualBlock",
    "SizeReport",
    "StatsDiff",
    "TensorSize",
    "analyze_channels",
    "compare_sizes",
    "graph_stats",
    "residual_blocks",
    "rewrite_channels",
    "size_report",
]
