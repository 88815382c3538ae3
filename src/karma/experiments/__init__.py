"""Experiment grids: configs x seeds -> trained runs -> one honest comparison table."""
