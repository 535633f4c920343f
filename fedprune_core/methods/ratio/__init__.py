"""Pruning-ratio policies: each client's ratio at the start and after each of its rounds."""
