"""Serving: the setup-once/predict-many model a Cog predictor wraps, the family registry,
stopping within a grace period, and the memory setting of a serving process."""
