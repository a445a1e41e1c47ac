"""
Whether a text encoder's states say which side of the canvas a digit is on (`ddpm_hub.data.digit_pairs.side_probe`:
a linear probe fit on the seen pairs' captions, scored on the unseen pairs'). Not a test.

    python benchmarks/text_side_probe.py [MODEL ...]

Each MODEL is a trained digit-pairs pipeline folder (its text encoder as trained) or a configuration (a fresh
encoder, built as training starts it); the default is the `ddpm-digit-pairs-text` configuration. Each configuration is
also measured with T5's own start (the config without `initial_head_offsets`). 0.5 means the states do not say:
cross-attention then reads a caption as a set of words, and "3 left of 7" and "7 left of 3" give the same images.
Prints one JSON line.
"""

import argparse
import importlib.util
import json
import platform
import sys
from pathlib import Path

import torch

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddpm_hub.data.digit_pairs import side_probe
from ddpm_hub.loading.text import HEAD_OFFSETS, load_text_encoder
from ddpm_hub.pipelines import Source


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["ddpm-digit-pairs-text"])
    parser.add_argument("--seed", type=int, default=0, help="seeds a configuration's fresh weights (default: 0)")
    args = parser.parse_args(argv)
    rows = []
    for model in args.models:
        if Path(model, "text_encoder", "model.safetensors").is_file():
            encoder, tokenizer = load_text_encoder(model)
            rows.append({"model": model, "encoder": "trained", "side_probe": side_probe(encoder, tokenizer)})
            continue
        pipeline = Source.of(model).build(seed=args.seed)
        encoder, tokenizer = pipeline.text_encoder, pipeline.tokenizer
        rows.append({"model": model, "encoder": "fresh", "side_probe": side_probe(encoder, tokenizer)})
        if getattr(encoder.config, HEAD_OFFSETS, None):
            config = encoder.config.to_dict()
            del config[HEAD_OFFSETS]
            torch.manual_seed(args.seed)
            plain = type(encoder)(type(encoder.config)(**config)).eval()
            rows.append(
                {
                    "model": model,
                    "encoder": f"fresh, without {HEAD_OFFSETS}",
                    "side_probe": side_probe(plain, tokenizer),
                }
            )
    print(
        json.dumps(
            {
                "rows": rows,
                "device": f"{platform.machine()} CPU",
                "command": "python benchmarks/text_side_probe.py " + " ".join(args.models),
            }
        )
    )


if __name__ == "__main__":
    main()
