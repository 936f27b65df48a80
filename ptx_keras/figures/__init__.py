"""Matplotlib figures (Agg backend): weight maps, phantoms, evaluation overlays, curves."""

__all__ = []
