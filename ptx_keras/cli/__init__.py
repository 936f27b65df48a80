"""Command-line wrappers: argument parsing only."""

__all__ = []
