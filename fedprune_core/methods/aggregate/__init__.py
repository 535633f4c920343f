"""Server aggregation: how the decoded updates become the next global model."""
