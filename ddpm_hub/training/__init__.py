"""The parts of training, behind `main.py` (whose `main()` is their table of contents; `training/train.py`, `python -m
ddpm_hub.train` and `ddpm-hub train` run it).

main.py                the entry: check the options, then train and write the run folder
options.py             TrainingOptions: every option, typed, in the groups the parts take; --help, --config, --dry-run
checks.py              everything a user can get wrong, checked before any work
randomness.py          every random draw a function of (seed, stream, position, rank)
data.py                the dataset of a run, checked against the model's conditioning, split, held out
batches.py             MicroBatches: micro-batch m of a rank; the loader; the held-out split
model.py               the pipeline to train (from its source, with the run's overrides), speed settings, optimizer
run.py                 Run: what the loop touches, built from the options' groups; the accelerator
ema.py                 EMA of the weights
checkpoint_folders.py  checkpoint folders on disk: atomic, listed, pruned, their training_state.json
checkpointing.py       saving a run into a checkpoint and resuming from one, exactly
loop.py                optimizer steps, schedules, the non-finite stop
grids.py               sample grids and the guidance strip
validation.py          held-out loss and bits/dim
output.py              the output folder, the saved pipeline, the summary, publishing
autoencoder.py         an AutoencoderKL configuration as --pipeline: its source, checks, model and run
autoencoder_loss.py    the autoencoder's objective: reconstruction (L1 or L2), KL, SSIM
autoencoder_loop.py    the autoencoder's loop and entry
autoencoder_output.py  its checkpoints and its end: the measured scaling factor, the AutoencoderKL folder
clip.py                a CLIPModel configuration as --pipeline (unCLIP's first stage): source, checks, data, run
clip_loss.py           CLIP's contrastive loss, same-caption negatives masked, features gathered across ranks
clip_loop.py           the CLIP's loop and entry
clip_output.py         its checkpoints and its end: the CLIPModel folder, tokenizer, preprocessing, retrieval picture
prior.py               a PriorTransformer configuration as --pipeline (unCLIP's prior): source, checks, data, run
prior_options.py       its options: --clip, --text_dropout_prob
prior_loss.py          its objective: x_0 of the normalised CLIP image embedding, MSE
prior_loop.py          the prior's loop and entry
prior_output.py        its checkpoints and its end: the prior folder, the held-out loss and caption accuracy
"""
