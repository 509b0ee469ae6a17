"""Calibration: statistics of models on data (Gram matrices, Fisher diagonals) for the merge
methods that need them."""
