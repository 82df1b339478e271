"""Training a compiled-to-be graph: fine-tuning by distillation (:mod:`.distill`), as a call and as the
``finetune`` pipeline step (:mod:`.step`). torch is imported only when training runs.

Example::

    >>> from slimgraph.training import finetune
    >>> finetune.__name__
    'finetune'
"""

from slimgraph.training.distill import LOSSES, FinetuneError, TrainData, finetune, finetune_step
from slimgraph.training.step import Finetune

__all__ = ["LOSSES", "Finetune", "FinetuneError", "TrainData", "finetune", "finetune_step"]
