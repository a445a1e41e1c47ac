"""`python -m ddpm_hub.cli ...` (and `accelerate launch -m ddpm_hub.cli ...`): the `ddpm-hub` command."""

import sys

from . import main

sys.exit(main())
