"""Reports that run passes to measure what they would do: per-layer pruning
sensitivity (:func:`sensitivity`) and the quantization report and sensitivity
table (:mod:`~slimgraph.reports.quant_report`). They sit above the passes, beside
the ledger; read-only analyses are in :mod:`slimgraph.analysis`.

Example::

    >>> from slimgraph.reports import sensitivity, quant_report   # doctest: +SKIP
"""

from slimgraph.reports.quant_report import QuantReport, quant_report, sensitivity_table
from slimgraph.reports.sensitivity import SensitivityRow, SensitivityTable
from slimgraph.reports.sensitivity import sensitivity  # the function, not the module of the same name
