"""The compression ledger: what each pass of a pipeline buys, measured on the compiled model.

:func:`ledger` runs a pipeline and, after each pass (or each group of passes
separated by ``;``), records nodes, parameters, weight bytes as stored (per
dtype), FLOPs, the compiled model's latency (median and p90 from
``CompiledModel.benchmark``) and, given evaluation data, accuracy or
agreement with the float model. The :class:`Ledger` prints as a table,
saves JSON and a PNG chart, and warns about passes that do not pay.

Example::

    >>> from slimgraph.demo import demo_model, demo_inputs
    >>> from slimgraph.ledger import ledger
    >>> book = ledger(demo_model(), demo_inputs(batch=2), "fold-constants,fuse", runs=3, warmup=1)
    >>> [row.step for row in book.rows]
    ['(input)', 'fold-constants', 'fuse']
    >>> book.rows[-1].weight_bytes <= book.rows[0].weight_bytes
    True
"""

from slimgraph.ledger.data import LedgerError, load_data
from slimgraph.ledger.record import ledger
from slimgraph.ledger.report import Ledger, LedgerRow, LedgerWarning

__all__ = ["Ledger", "LedgerError", "LedgerRow", "LedgerWarning", "ledger", "load_data"]
