"""Local training: how a client trains its (sub-)model (plain SGD, HeteroFL's scaler, FjORD's
ordered dropout)."""
