"""Sub-model and mask extraction: which coordinates a client trains."""
