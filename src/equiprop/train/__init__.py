"""Training: masked multi-task losses, task weighting, metrics in physical units, the LightningModule."""
