"""Publishing to the Hugging Face Hub: a trained folder checked, carded and committed in one go.

- `publishing`: `publish` (validation, the staged upload without secrets, retries, one commit) and its checks;
- `staging`: the files a publish uploads, staged with the card in a temporary folder, secrets scrubbed;
- `retries`: the Hub calls retried within one deadline, and `PublishError`;
- `model_card`: the card rendered from `model_card.md` and the run folder's records (what a user chose is escaped
  by `ddpm_hub.public`);
- `card_training`: the card's training table, from the run's training record and options;

Layer: the top of the library (below training and the command line); it may import everything but those two.
Loading from the Hub is `ddpm_hub.loading`.
"""

from .publishing import PublishError, check_can_publish, publish

__all__ = ["PublishError", "check_can_publish", "publish"]
