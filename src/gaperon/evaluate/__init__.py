"""Evaluation: lm-eval tasks offline over our model and a batch-invariant scorer."""
