"""
Train a DDPM (Ho et al. 2020) with Accelerate, on one CPU, one GPU, many GPUs or many machines.

    # The README's main job: ddpm-digits-16 on scikit-learn's digits for a bounded few minutes on a CPU
    accelerate launch --num_processes 1 training/train.py --config training/configs/ddpm-digits-16.yaml
    # Two processes on this CPU (gloo), eight GPUs, two machines of eight GPUs (run the last on each machine)
    accelerate launch --multi_gpu --num_processes 2 training/train.py --pipeline ddpm-tiny-8 --max_train_steps 20
    accelerate launch --config_file training/accelerate_configs/multi_gpu_8.yaml training/train.py \\
        --pipeline ddpm-cifar10-32 --dataset_name cifar10 --random_flip --train_batch_size 16 \\
        --learning_rate 2e-4 --lr_warmup_steps 5000 --use_ema --max_train_steps 800000 --mixed_precision bf16
    accelerate launch --config_file training/accelerate_configs/multi_node_2x8.yaml --machine_rank 0 ...
    # Continue after a crash or a preemption (bit-identical to an uninterrupted run on CPU); check options only
    accelerate launch training/train.py ... --resume_from_checkpoint latest
    python training/train.py --config my_run.yaml --learning_rate 1e-4 --dry-run
    # From an installed package (pip install ddpm-hub), without a checkout: the same script, as a module
    accelerate launch -m ddpm_hub.train --pipeline ddpm-digits-16 --max_train_minutes 5

This module is the training entry: `training/train.py` (the script the commands name), `python -m ddpm_hub.train`
and `ddpm-hub train` all run its `main`, a table of contents over the parts in this package. `--help` documents
every option and its default; `--config` reads them from YAML or JSON (flags given win). What a run leaves in
`--output_dir` is described in `ddpm_hub/run_folder.py`.
Randomness is a function of (seed, position, rank), so a resumed run draws exactly what an uninterrupted one draws.
"""

from accelerate import Accelerator

from ..pipelines.source import Source
from .autoencoder import autoencoder_source
from .autoencoder_loop import autoencoder_main
from .checkpointing import resume
from .checks import check_options
from .clip import clip_source
from .clip_loop import clip_main
from .data import load_training_data
from .latents import autoencoder_of
from .loop import train
from .options import TrainingOptions, dry_run_report, parse_options
from .output import finish, hold_output_dir, publish_output, start_output
from .prior import prior_source
from .prior_loop import prior_main
from .run import build_run, close_accelerator, make_accelerator


def main(argv: list[str] | None = None) -> None:
    """Check the options, then train and write the run folder (or, with --dry-run, print the options resolved)."""
    options, dry_run = parse_options(argv, description=__doc__)
    clip = clip_source(options.model.pipeline)  # a CLIP configuration (unCLIP's first stage): its own trainer
    if clip is not None:
        clip_main(options, dry_run, clip)
        return
    prior = prior_source(options.model.pipeline)  # a PriorTransformer configuration (unCLIP's second stage)
    if prior is not None:
        prior_main(options, dry_run, prior)
        return
    autoencoder = autoencoder_source(options.model.pipeline)  # an AutoencoderKL configuration: its own trainer
    if autoencoder is not None:
        autoencoder_main(options, dry_run, autoencoder)
        return
    options, source = check_options(options)  # every mistake a user can make fails here, in seconds
    if dry_run:
        print(dry_run_report(options, source))
        return
    accelerator = make_accelerator(options)
    with hold_output_dir(options, accelerator):  # one run writes a folder at a time
        train_and_write(options, source, accelerator)
    close_accelerator(accelerator)  # after the model is gone: see close_accelerator


def train_and_write(o: TrainingOptions, source: Source, accelerator: Accelerator) -> None:
    conditioning = source.conditioning()
    channels = conditioning.image_channels(source.unet_config["in_channels"])
    autoencoder = autoencoder_of(o.model, source)
    if autoencoder is not None:  # latent diffusion: the data are the autoencoder's images
        channels = autoencoder.image_channels
    dataset = load_training_data(
        o.data, o.validation.validation_holdout, o.seed, conditioning, channels, o.model.pipeline, accelerator
    )
    run = build_run(o, source, accelerator, dataset)
    resumed = resume(run)
    start_output(run)
    result = train(run, resumed)
    finish(run, result)
    if o.hub.push_to_hub and accelerator.is_main_process:
        publish_output(run)
