"""``python -m training NAME|all [--seed N] [--steps N] [--threads N] [--data N]``."""

from training.train import main

raise SystemExit(main())
