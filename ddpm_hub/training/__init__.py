"""The parts of training, behind the thin script `training/train.py` (whose `main()` is their table of contents).

options.py      TrainingOptions: every option, typed; --help, --config and --dry-run
checks.py       everything a user can get wrong, checked before any work (PipelineSource)
build.py        the accelerator, data, model, objective, optimizer and EMA of a run (Run)
randomness.py   every random draw a function of (seed, stream, position, rank)
batches.py      MicroBatches: micro-batch m of a rank; the loader; the held-out split
ema.py          EMA of the weights
checkpoints.py  atomic checkpoints, exact resume
loop.py         optimizer steps, schedules, the non-finite stop
reporting.py    the output folder, grids, held-out metrics, the summary, publishing
"""
