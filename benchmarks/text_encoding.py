"""
What a frozen text encoder costs a training step: encoding each batch's captions again, or looking up the states
each caption got once (`ddpm_hub.pipelines.conditioning.TrainingPromptCondition.embed`, what training does with a
frozen encoder). Not a test.

    python benchmarks/text_encoding.py [--batch_size 64] [--rounds 5]

For the digit-pairs configuration's own small encoder and for a T5 v1.1 base-sized encoder (`T5EncoderModel` built
from its config with random weights: the cost is the same as the trained one's), on batches of builtin:digit-pairs
captions: milliseconds per batch both ways, and the first-time cost of the lookup (every caption encoded once).
Prints one JSON line.
"""

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddpm_hub.data.digit_pairs import prompt
from ddpm_hub.pipelines import Source
from ddpm_hub.pipelines.conditioning import TrainingPromptCondition


def best_ms(function, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return 1000 * min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    from transformers import T5Config, T5EncoderModel

    pipeline = Source.of("ddpm-digit-pairs-text").build(seed=0)
    tokenizer = pipeline.tokenizer
    t5_base = T5Config(vocab_size=len(tokenizer), d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12,
                       feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=2)  # fmt: skip
    encoders = {"digit-pairs encoder": pipeline.text_encoder, "T5 v1.1 base size": T5EncoderModel(t5_base)}
    captions = [prompt(i % 10, (3 * i + 1) % 10) for i in range(args.batch_size)]
    results = {}
    for name, encoder in encoders.items():
        encoder.eval()
        kind = TrainingPromptCondition(tokenizer, encoder)
        with torch.no_grad():
            per_batch = best_ms(lambda kind=kind: kind.encode(captions, "cpu", warn=False), args.rounds)
        started = time.perf_counter()
        kind.training_batch(captions, "cpu")  # the first time: each caption encoded once, alone
        first = 1000 * (time.perf_counter() - started)
        looked_up = best_ms(lambda kind=kind: kind.training_batch(captions, "cpu"), args.rounds)
        parameters = sum(p.numel() for p in encoder.parameters())
        results[name] = {"parameters": parameters, "encode_ms": round(per_batch, 2), "lookup_ms": round(looked_up, 2)}
        results[name]["first_lookup_ms"] = round(first, 1)
    print(json.dumps({"batch_size": args.batch_size, "threads": torch.get_num_threads(), **results}))


if __name__ == "__main__":
    main()
