"""The ledger of the digits CNN (tests/digits.py), as docs/ledger.md shows it.

Batch 64, evaluated on the 360 test images with their labels, calibrated on 256
training images; the pipeline as given (default: the one docs/ledger.md reads).
Prints the ledger and writes benchmarks/results/ledger_digits.json.

    python benchmarks/ledger_digits.py [--pipeline "..."] [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PIPELINE = "fold-constants,prune{method=channel,ratio=0.5},share-weights,quantize,fuse"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=PIPELINE)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    import torch

    from slimgraph.frontends import from_torch
    from slimgraph.ledger import ledger
    from tests.digits import digits_data, trained_digits_cnn

    data = digits_data()
    graph = from_torch(trained_digits_cnn(), (torch.from_numpy(data.x_test[:64]),))
    book = ledger(graph, (data.x_test[:64],), args.pipeline, eval_data=(data.x_test, data.y_test),
                  calibration_data=data.x_train[:256], runs=args.runs)
    print(book)
    print(f"wrote {book.save_json(os.path.join(ROOT, 'benchmarks', 'results', 'ledger_digits.json'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
