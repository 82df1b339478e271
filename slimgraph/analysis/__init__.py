"""Analyses over slimgraph graphs: channel groups for structured pruning
(:mod:`~slimgraph.analysis.channels`), size and cost reports
(:mod:`~slimgraph.analysis.size_report`), residual blocks
(:mod:`~slimgraph.analysis.residual`), per-layer pruning sensitivity
(:func:`sensitivity`) and per-block depth sensitivity (:func:`depth_sensitivity`).

Example::

    >>> from slimgraph.analysis import sensitivity, size_report, compare_sizes   # doctest: +SKIP
"""

from slimgraph.analysis.channels import ChannelAnalysis, ChannelGroup, analyze_channels, rewrite_channels
from slimgraph.analysis.residual import ResidualBlock, residual_blocks
from slimgraph.analysis.sensitivity import DepthSensitivity, SensitivityRow, SensitivityTable, depth_sensitivity
from slimgraph.analysis.sensitivity import sensitivity  # the function, not the module of the same name
from slimgraph.analysis.size_report import SizeReport, TensorSize, compare_sizes, size_report

__all__ = [
    "ChannelAnalysis",
    "ChannelGroup",
    "DepthSensitivity",
    "ResidualBlock",
    "SensitivityRow",
    "SensitivityTable",
    "SizeReport",
    "TensorSize",
    "analyze_channels",
    "compare_sizes",
    "depth_sensitivity",
    "residual_blocks",
    "rewrite_channels",
    "sensitivity",
    "size_report",
]
