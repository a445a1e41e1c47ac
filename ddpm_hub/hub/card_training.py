"""The training table of the model card, and its distillation row: what the run's training record and options say
about how it was trained.

Rows of (label, value) for `model_card.md`, from `training_summary.json` and `training_options.json`; a value the
run did not record leaves its row out.
"""

from pathlib import Path

from ..public import code_span, is_local_path
from ..run_folder import read_json


def training_rows(summary: dict, options: dict) -> list[tuple[str, str]]:
    """(label, value) rows of the training table; only the values the run recorded."""
    rows = []

    def add(label: str, value) -> None:
        if value not in (None, "", []):
            rows.append((label, str(value)))

    steps = summary.get("steps")
    if steps is not None:
        stopped = summary.get("stopped_by")
        add("optimizer steps", f"{steps:,}" + (f" (stopped by {stopped})" if stopped else ""))
    if summary.get("resumed_from_step"):
        add("resumed from", f"step {summary['resumed_from_step']:,}")
    images_seen, epochs = summary.get("images_seen"), summary.get("epochs")
    if images_seen is not None:
        add("images seen", f"{images_seen:,}" + (f" ({epochs} epochs)" if epochs is not None else ""))
    add("global batch", _batch(summary, options))
    add("optimizer", _optimizer(options))
    add("EMA", _ema(summary, options))
    precision = summary.get("mixed_precision") or options.get("mixed_precision")
    if precision is not None:
        add("precision", "fp32 (no mixed precision)" if precision == "no" else f"{precision} mixed precision")
    add("hardware", _hardware(summary))
    if summary.get("wall_time_seconds") is not None:
        add("training time", _duration(summary["wall_time_seconds"]))
    if summary.get("images_per_second") is not None:
        add("throughput", f"{summary['images_per_second']} images/s")
    if summary.get("final_loss") is not None:
        loss = f"{summary['final_loss']:.4f}"
        if summary.get("mean_loss_last_100_steps") is not None:
            loss += f" (mean of the last 100 steps: {summary['mean_loss_last_100_steps']:.4f})"
        add("final loss", loss)
    add("seed", options.get("seed"))
    return rows


def _batch(summary: dict, options: dict) -> str | None:
    batch = summary.get("global_batch_size")
    per_process, processes = options.get("train_batch_size"), summary.get("num_processes")
    accumulation = options.get("gradient_accumulation_steps")
    parts = [f"{per_process} per process"] if per_process else []
    parts += [f"{processes} process{'es' if processes != 1 else ''}"] if processes else []
    parts += [f"{accumulation} accumulation step{'s' if accumulation != 1 else ''}"] if accumulation else []
    if batch is None:
        return " × ".join(parts) or None
    return f"{batch} images" + (f" ({' × '.join(parts)})" if parts else "")


def _optimizer(options: dict) -> str | None:
    if options.get("learning_rate") is None:
        return None
    text = f"AdamW, learning rate {options['learning_rate']:g}"
    if options.get("lr_scheduler"):
        text += f", {options['lr_scheduler']} schedule"
    if options.get("lr_warmup_steps") is not None:
        text += f" with {options['lr_warmup_steps']} warmup steps"
    betas = (options.get("adam_beta1"), options.get("adam_beta2"))
    if None not in betas:
        text += f", betas ({betas[0]}, {betas[1]})"
    if options.get("adam_weight_decay") is not None:
        text += f", weight decay {options['adam_weight_decay']:g}"
    if options.get("max_grad_norm"):
        text += f", gradients clipped at norm {options['max_grad_norm']}"
    return text


def _ema(summary: dict, options: dict) -> str | None:
    used = summary.get("ema", options.get("use_ema"))
    if used is None:
        return None
    if not used:
        return "no (the published weights are the last training weights)"
    text = "yes: the published weights are the exponential moving average"
    if options.get("ema_max_decay") is not None:
        text += f" (max decay {options['ema_max_decay']}"
        if options.get("ema_power") is not None:
            text += f", warmup power {options['ema_power']}"
        text += ")"
    return text


def _hardware(summary: dict) -> str | None:
    device, processes = summary.get("device"), summary.get("num_processes")
    if device is None:
        return None
    if processes and processes > 1:
        return f"{processes} processes on {device}"
    return f"1 process on {device}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def distillation_facts(folder: Path, options: dict) -> dict | None:
    """
    A distilled student: its teacher, the method, the stages' calls and steps (progressive) or the teacher's step and
    the run's length (consistency), the sampler and the calls it samples in by default.
    """
    teacher = options.get("distill_from")
    if not teacher:
        return None
    index = read_json(folder / "model_index.json", "the pipeline's index") or {}
    calls = [int(c) for c in options.get("distill_calls") or []]
    consistency = options.get("distill_method") == "consistency"
    return {
        "teacher": code_span(Path(teacher).name if is_local_path(teacher) else teacher, in_table=True),
        "method": options.get("distill_method") or "progressive",
        "sampler": "LCMScheduler" if consistency else "DDIM",
        "skip": options.get("consistency_skip"),
        "steps": options.get("max_train_steps"),
        "stages": ", ".join(map(str, calls)),
        "num_stages": len(calls),
        "steps_per_stage": options.get("distill_steps_per_stage"),
        "calls": index.get(
            "default_num_inference_steps",
            options.get("consistency_calls") if consistency else (calls[-1] if calls else None),
        ),
    }
