"""Compile time and numerics of real architectures at full size (issue 14).

Each model is built with Hugging Face ``transformers`` from its config (the
published full-size shape, random weights, nothing downloaded), fp32, batch 1;
imported with ``from_torch``, compiled for ``llvm`` with the default pipeline,
and compared with PyTorch eager. Each model runs in a child process with a time
limit, so one that fails to import, hangs in the build or runs out of memory is
reported and the rest still run.

Batch norms get scales near 1 and random running statistics (see
``_lively_batch_norms``). Prints a Markdown table (model, family, import
result or the FrontendError's first line and the ops it names, import and
compile seconds with the compile split into passes, lowering, scheduling,
TVM's build and collecting each kernel's source, kernels called and compiled,
and the largest error relative to the output's largest magnitude) and writes
``benchmarks/results/real_models.json``.

    python benchmarks/real_models.py [--models vit-base,resnet-50] [--skip llama] [--timeout 600]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: Text inputs: batch 1, 128 tokens (the decoder of the encoder-decoder reads 32).
SEQ = 128
DECODER_SEQ = 32


def _text_inputs(vocab: int, names: tuple[str, ...], padding: int = 16):
    """Token ids and, as ``names`` ask, a padding mask (the last ``padding`` tokens
    masked) and token types (two segments)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (1, SEQ), generator=gen)
    mask = torch.ones(1, SEQ, dtype=torch.long)
    mask[:, SEQ - padding:] = 0
    types = torch.zeros(1, SEQ, dtype=torch.long)
    types[:, SEQ // 2:] = 1
    pick = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
            "decoder_input_ids": ids[:, :DECODER_SEQ]}
    return tuple(pick[n] for n in names)


def _image(size: int, channels: int = 3):
    import torch

    return (torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0)),)


def _first_output(model, names: tuple[str, ...]):
    """A torch module calling ``model`` with keyword inputs ``names`` and returning its first output."""
    import torch

    class FirstOutput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return self.model(**dict(zip(names, args)))[0]

    return FirstOutput().eval()


def _text(config_cls: str, model_cls: str, names: tuple[str, ...], **config) -> Callable:
    def make():
        import transformers

        cfg = getattr(transformers, config_cls)(**config)
        model = getattr(transformers, model_cls)(cfg)
        return _first_output(model, names), _text_inputs(cfg.vocab_size, names)

    return make


def _vision(config_cls: str, model_cls: str, size: int, input_name: str = "pixel_values", **config) -> Callable:
    def make():
        import transformers

        cfg = getattr(transformers, config_cls)(**config)
        model = getattr(transformers, model_cls)(cfg)
        return _first_output(model, (input_name,)), _image(size)

    return make


def _wav2vec2():
    import torch
    import transformers

    model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config())
    audio = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))  # one second at 16 kHz
    return _first_output(model, ("input_values",)), (audio,)


def _whisper_encoder():
    import torch
    import transformers

    cfg = transformers.WhisperConfig()
    encoder = transformers.WhisperModel(cfg).get_encoder()
    frames = 2 * cfg.max_source_positions  # 30 s of audio: the encoder's convs halve it to its positions
    features = torch.randn(1, cfg.num_mel_bins, frames, generator=torch.Generator().manual_seed(0))
    return _first_output(encoder, ("input_features",)), (features,)


#: name -> (family, builder). Configs are the library defaults where those are the named model;
#: the Llama-style model takes SmolLM-135M's shape (the default config is 7B), EfficientNet B0's
#: coefficients (the default config is B7), DeiT-small its width and heads (the default is DeiT-base).
MODELS: dict[str, tuple[str, Callable]] = {
    "bert-base": ("encoder text", _text("BertConfig", "BertModel", ("input_ids", "attention_mask", "token_type_ids"))),
    "distilbert": ("encoder text", _text("DistilBertConfig", "DistilBertModel", ("input_ids", "attention_mask"))),
    "roberta-base": ("encoder text", _text("RobertaConfig", "RobertaModel", ("input_ids", "attention_mask"))),
    "gpt2": ("decoder text", _text("GPT2Config", "GPT2Model", ("input_ids",))),
    "llama-smol-135m": ("decoder text", _text(
        "LlamaConfig", "LlamaModel", ("input_ids",), vocab_size=49152, hidden_size=576, intermediate_size=1536,
        num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
        tie_word_embeddings=True)),
    "t5-small": ("encoder-decoder", _text("T5Config", "T5Model", ("input_ids", "attention_mask", "decoder_input_ids"))),
    "t5-encoder": ("encoder text", _text("T5Config", "T5EncoderModel", ("input_ids", "attention_mask"))),
    "vit-base": ("vision transformer", _vision("ViTConfig", "ViTModel", 224)),
    "deit-small": ("vision transformer", _vision(
        "DeiTConfig", "DeiTModel", 224, hidden_size=384, num_attention_heads=6, intermediate_size=1536)),
    "swin-tiny": ("vision transformer", _vision("SwinConfig", "SwinModel", 224)),
    "resnet-50": ("convolutional", _vision("ResNetConfig", "ResNetModel", 224)),
    "convnext-tiny": ("convolutional", _vision("ConvNextConfig", "ConvNextModel", 224)),
    "mobilenet-v2": ("convolutional", _vision("MobileNetV2Config", "MobileNetV2Model", 224)),
    "efficientnet-b0": ("convolutional", _vision(
        "EfficientNetConfig", "EfficientNetModel", 224, width_coefficient=1.0, depth_coefficient=1.0, image_size=224,
        hidden_dim=1280, dropout_rate=0.2)),
    "mobilevit-small": ("hybrid", _vision("MobileViTConfig", "MobileViTModel", 256)),
    "segformer-b0": ("dense prediction", _vision("SegformerConfig", "SegformerForSemanticSegmentation", 512)),
    "wav2vec2-base": ("audio", _wav2vec2),
    "whisper-encoder": ("audio", _whisper_encoder),
}


def _lively_batch_norms(module) -> None:
    """Batch norms with random statistics and affine terms near 1. ``transformers`` initializes
    their scales around 0.02, which EfficientNet's 49 norms multiply into an all-zero output:
    nothing to compare. Random running statistics also make the folding of norms into convs count."""
    import torch

    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                for t, base in ((m.weight, 1.0), (m.bias, 0.0), (m.running_mean, 0.0), (m.running_var, 1.0)):
                    if t is not None:
                        t.copy_(base + 0.1 * torch.rand(t.shape, generator=gen))


def run_one(name: str) -> dict:
    """Import, compile and compare one model; the row of the table (never raises)."""
    import numpy as np
    import torch

    from slimgraph.api import bind_shapes, import_model, optimize
    from slimgraph.backends.tvm import build
    from slimgraph.errors import FrontendError

    family, make = MODELS[name]
    row: dict = {"model": name, "family": family}
    torch.manual_seed(0)
    module, inputs = make()
    _lively_batch_norms(module)
    row["parameters"] = sum(p.numel() for p in module.parameters())
    start = time.perf_counter()
    try:
        graph = import_model(module, inputs)
    except FrontendError as exc:
        first, *rest = str(exc).strip().splitlines()
        row["import"] = first
        # the unsupported-op list: one "  op (xN), first at file:line" line per op
        row["missing_ops"] = [line.strip().split(" (x")[0] for line in rest if line.startswith("  ")]
        row["import_error"] = str(exc)
        return row
    row["import"] = "ok"
    row["import_s"] = time.perf_counter() - start
    marks = {"start": time.perf_counter()}
    try:
        optimized = optimize(graph, "default")
        marks["lower"] = time.perf_counter()

        def progress(step: str, done: int, total: int) -> None:
            marks[step] = time.perf_counter()

        arrays = [t.numpy() for t in inputs]
        model = build(optimized, "llvm", bind_shapes(optimized, arrays, None), progress=progress)
    except Exception as exc:  # noqa: BLE001 - a model that fails to compile is a row, not the end of the run
        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        return row
    end = time.perf_counter()
    row["compile_s"] = end - marks["start"]
    row["phases_s"] = {
        "passes": marks["lower"] - marks["start"],
        "lower": marks["schedule"] - marks["lower"],
        "schedule": marks["compile"] - marks["schedule"],
        "tvm build": marks["done"] - marks["compile"],
        "sources": end - marks["done"],
    }
    row["kernel_calls"] = len(model.kernels)
    row["kernels_compiled"] = len({k.func for k in model.kernels})
    with torch.no_grad():
        want = module(*inputs).numpy()
    got = np.asarray(model(*arrays))
    row["output_max"] = float(np.max(np.abs(want)))
    row["max_rel_error"] = float(np.max(np.abs(got - want)) / max(row["output_max"], 1e-30))
    return row


def run_child(name: str, timeout: float) -> dict:
    """``run_one(name)`` in a fresh process, killed after ``timeout`` seconds."""
    return child_row(Path(__file__), [name], timeout, {"model": name, "family": MODELS[name][0]})


def child_row(script: Path, args: list[str], timeout: float, row: dict) -> dict:
    """Run ``script --child ARGS`` in a fresh process killed after ``timeout`` seconds; the JSON row it
    prints last, or ``row`` with an ``error`` saying why there is none (one model's failure is a row,
    not the end of the run)."""
    cmd = [sys.executable, str(script), "--child", *args]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"did not finish in {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {**row, "error": f"child failed: {tail[:300]}", "wall_s": time.perf_counter() - start}
    return json.loads(lines[-1])


def table(rows: list[dict]) -> str:
    head = ["model", "family", "import", "import s", "compile s", "passes / lower / schedule / tvm build / sources s",
            "kernels (calls / compiled)", "max rel error"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        phases = r.get("phases_s")
        cells = [
            r["model"], r["family"], " ".join([r.get("import", "-"), *r.get("missing_ops", [])]),
            f"{r['import_s']:.1f}" if "import_s" in r else "-",
            f"{r['compile_s']:.1f}" if "compile_s" in r else r.get("error", "-"),
            " / ".join(f"{v:.1f}" for v in phases.values()) if phases else "-",
            f"{r['kernel_calls']} / {r['kernels_compiled']}" if "kernel_calls" in r else "-",
            f"{r['max_rel_error']:.1e}" if "max_rel_error" in r else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    parser.add_argument("--skip", default="", help="models to leave out, comma-separated")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per model before it is stopped")
    parser.add_argument("--json", default=str(RESULTS / "real_models.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(run_one(args.child)), flush=True)
        return 0
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    names = [s.strip() for s in args.models.split(",") if s.strip() and s.strip() not in skip]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    rows = []
    for name in names:
        rows.append(run_child(name, args.timeout))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"batch": 1, "dtype": "float32", "target": "llvm", "pipeline": "default",
                               "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
