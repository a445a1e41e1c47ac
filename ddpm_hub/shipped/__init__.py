"""The code files a published repo carries, as this package imports them.

`DDPMHubPipeline.save_pretrained` copies these files next to the weights (the scheduler's into `scheduler/`, the
others at the repo's root), and plain diffusers loads them from there with `trust_remote_code=True`. So each file
imports only torch, numpy, PIL and diffusers, and the files of this folder relatively (diffusers' dynamic-module
loader follows `from .name import ...`), never the rest of ddpm_hub; `tests/test_structure.py` checks it.

Their file and class names are a contract: every published `model_index.json` names them
(`["pipeline_ddpm_hub", "DDPMHubPipeline"]`, `["scheduling_ddpm_hub", "DDPMHubScheduler"]`), so they never change.
The classes users import (`ddpm_hub.DDPMHubPipeline`, ...) extend these in `ddpm_hub.pipelines.library`.
"""
