"""Measuring a model: what `ddpm-hub eval` computes and what the model card reports.

- `likelihood`: bits/dim by the variational bound (DDPM eq. 5), full chain, strided or sampled;
- `metrics`: features (Inception when installed, else the digit features): FID / KID / precision, recall against a
  dataset, and the Inception Score of the class logits;
- `sweep`: quality and images/s against the number of model calls, for each sampler;
- `digit_classifier`: the small independent digit classifier and features, trained here in seconds;
- `accuracy`: whether a class or text model draws what it is asked for, read by the digit classifier;
- `sr_quality`: super-resolution against bicubic upsampling on photographs the model never saw;
- `reconstruction`: an autoencoder's PSNR, and its reconstructions' distance to the digits ÷ the floor;
- `clip_accuracy`: whether a digit-pairs CLIP picks the right caption among the 100 ordered pairs, seen and unseen;
- `unclip_accuracy`: text to image through unCLIP's prior and decoder: the prior alone, both halves read as asked, the
  spread of one prompt's samples against real canvases;
- `export`: samples written one file per image (PNG or `.npz`), resumable, sharded over processes.

Layer: imports the pipelines, the data, loading, `ddpm_hub.shipped` and the root modules; never publishing, training
or the command line.
"""
