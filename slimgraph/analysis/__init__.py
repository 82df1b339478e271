"""Analyses over slimgraph graphs: channel groups for structured pruning
(:mod:`~slimgraph.analysis.channels`), size and cost reports
(:mod:`~slimgraph.analysis.size_report`) and per-layer pruning sensitivity
(:func:`sensitivity`).

Example::

    >>> from slimgraph.analysis import sensitivity, size_report, compare_sizes   # doctest: +SKIP
"""

from slimgraph.analysis.channels import ChannelAnalysis, ChannelGroup, analyze_channels, rewrite_channels
from slimgraph.analysis.sensitivity import SensitivityRow, SensitivityTable
from slimgraph.analysis.sensitivity import sensitivity  # the function, not the module of the same name
from slimgraph.analysis.size_report import SizeReport, TensorSize, compare_sizes, size_report

__all__ = [
    "ChannelAnalysis",
    "ChannelGroup",
    "SensitivityRow",
    "SensitivityTable",
    "SizeReport",
    "TensorSize",
    "analyze_channels",
    "compare_sizes",
    "rewrite_channels",
    "sensitivity",
    "size_report",
]
