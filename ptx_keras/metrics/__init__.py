"""Evaluation metrics: in-graph Keras metrics and NumPy evaluation metrics."""
