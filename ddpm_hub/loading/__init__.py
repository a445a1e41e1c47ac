"""Reading pipeline folders, configurations and Hub repos into components, and writing the code files beside them.

- `components`: what a `model_index.json` names, each component loaded with the installed class (safetensors only
  unless pickles are trusted), the Hub download and what its refusals mean; the code files a saved folder carries;
- `weights`: a component's weight files checked before loading: safetensors, the variant asked for, finite values;
- `settings`: `LoadSettings`, the revision, variant and dtype of a load by name;
- `configs`: the configurations under `pipelines/`, built into components with fresh weights;
- `text`: text encoders and tokenizers (transformers) by name, and the word tokenizer built from captions;
- `clip`: a CLIP (unCLIP's first stage) by name or folder, frozen, with its image preprocessing and tokenizer;
- `prior`: a trained diffusion prior's folder (unCLIP's second stage) and the CLIP text side it reads;
- `hub_errors`: the Hub's HTTP refusals (401/403/404, revisions, offline) worded with the repo, the cause and the fix.

Layer: imports `ddpm_hub.shipped` and the root modules (errors, run_folder, resources), never the pipelines, the
data, evaluation, publishing, training or the command line. From a name to a pipeline: `ddpm_hub.pipelines.Source`.
"""
