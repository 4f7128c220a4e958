"""Running experiments: the entry points (train, evaluate), the checks of a run's config, one
training run (training.py), its processes (launch, worker), its folder and checkpoints, and the
jobs of sweeps and searches. Kept import-free so that `metalab-train --help` stays fast."""
