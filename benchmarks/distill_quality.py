"""
Few-call sampling of a teacher against its distilled students, by distance to the floor. Not a test.

    python benchmarks/distill_quality.py runs/ddpm-digits-16 runs/ddpm-digits-16-distill runs/ddpm-digits-16-distill-1

The digits are split by a seeded permutation into a reference half (898) and a held-out half (899); every row is
the Fréchet distance, in the repo's digit classifier's features, of `--num_images` samples to the reference half,
divided by the distance of as many real held-out digits to it (the floor: 1.0 means "as close as real digits are").
The teacher is sampled by DDIM and DPM-Solver++ at 20 and at the students' numbers of calls, with the timesteps its
scheduler config gives ("leading" for this project's configurations: 4 DDIM steps start at t = 750) and with
"trailing" ones (starting at t = 999, as the students do); each student by its own sampler (DDIM, or LCMScheduler
for a consistency student) in its own calls, or at `--student_calls`.
The same noise for image i in every row (`ddpm_hub.pipelines.sampling`). Prints a Markdown table and one JSON line;
writes distill_quality.md and .json into --output_dir (default: the first student's folder).
"""

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import torch
from diffusers import LCMScheduler

if importlib.util.find_spec("ddpm_hub") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddpm_hub import DDPMHubPipeline, DDPMHubScheduler, Source
from ddpm_hub.data.sources import load_images
from ddpm_hub.evaluation.metrics import cached_reference_features, features_for, reference_split
from ddpm_hub.evaluation.sweep import sampler_sweep
from ddpm_hub.pipelines.sampling import Sampler
from ddpm_hub.shipped.samplers_ddpm_hub import ddpm_chain


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="the trained teacher (a folder or Hub repo id)")
    parser.add_argument("students", nargs="+", help="distilled students (folders or repo ids)")
    parser.add_argument("--num_images", type=int, default=898, help="samples per row (default: %(default)s)")
    parser.add_argument("--teacher_calls", default="20", help="more teacher rows, comma separated (default: 20)")
    parser.add_argument(
        "--student_calls", default=None, help="each student at these calls, comma separated (default: its own)"
    )
    parser.add_argument("--students_only", action="store_true", help="no teacher rows (a quick comparison)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--output_dir", default=None)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    teacher = Source.of(args.teacher).load()
    students = [Source.of(name).load() for name in args.students]
    features = features_for("digits", "builtin:digits")
    digits = load_images("builtin:digits", resolution=teacher.unet.config.sample_size, channels=1).images
    reference = reference_split(cached_reference_features(digits, features, {"dataset": "builtin:digits"}), args.seed)
    count = min(args.num_images, len(reference.held_out))
    options = dict(seed=args.seed, batch_size=args.batch_size, kid_subset_size=min(1000, count))
    options.update(classify=features.classify, standardize_kernel=features.standardize_kernel)

    def rows(model, name, samplers, spacing):
        measured = sampler_sweep(model, reference, features.extract, count, samplers, **options)
        return [{"model": name, "timesteps": spacing, **row} for row in measured]

    calls = {int(c) for c in args.teacher_calls.split(",")}
    student_counts = [int(c) for c in args.student_calls.split(",")] if args.student_calls else None
    calls = sorted(calls | {student.default_num_inference_steps for student in students})
    table = []
    started = time.perf_counter()
    chain = ddpm_chain(teacher.scheduler)  # a trained model's fast default sampler carries its chain
    for spacing in () if args.students_only else ("leading", "trailing"):
        spaced = DDPMHubPipeline.from_pipe(teacher)
        spaced.scheduler = DDPMHubScheduler.from_config(chain.config, timestep_spacing=spacing)
        samplers = [Sampler(kind, n) for n in reversed(calls) for kind in ("ddim", "dpmsolver++")]
        table += rows(spaced, f"teacher {args.teacher}", samplers, spacing)
    for name, student in zip(args.students, students):
        kind = "lcm" if isinstance(student.scheduler, LCMScheduler) else "ddim"  # its own sampler
        spacing = "LCM" if kind == "lcm" else student.scheduler.config.timestep_spacing
        counts = student_counts or [student.default_num_inference_steps]
        table += rows(student, f"student {name}", [Sampler(kind, n) for n in counts], spacing)
    seconds = time.perf_counter() - started

    lines = [
        "| model | sampler | timesteps | calls | FD (digit features) ↓ | ÷ floor ↓ | classes (TV) ↓ | images/s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in table:
        lines.append(
            f"| {row['model']} | {row['label']} | {row['timesteps']} | {row['nfe']} | {row['fid']:.2f} | "
            f"**{row['fid_ratio']:.2f}** | {row['class_balance_tv']:.3f} | {row['images_per_second']:.1f} |"
        )
    device = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    lines += [
        "",
        f"{count} samples per row against a seeded half of the 1,797 digits ({len(reference.features)}); floor: "
        f"{count} real digits of the other half score {table[0]['fid_floor']:.2f}. Device: {device}. Produced by "
        f"`python benchmarks/distill_quality.py {' '.join(sys.argv[1:] if argv is None else argv)}`.",
    ]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    output_dir = Path(args.output_dir or args.students[0])
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "distill_quality.md").write_text(markdown)
    record = {"rows": table, "num_images": count, "device": device, "seconds": round(seconds, 1)}
    (output_dir / "distill_quality.json").write_text(json.dumps(record, indent=2) + "\n")
    summary = [[r["model"], r["label"], r["timesteps"], r["nfe"], round(r["fid_ratio"], 3)] for r in table]
    print(json.dumps({"rows": summary}))


if __name__ == "__main__":
    main()
