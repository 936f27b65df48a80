"""Command-line wrappers: argument parsing only."""
