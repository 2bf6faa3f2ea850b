"""Lifecycle: the model registry (GTO), data ingestion and the continuous-training
loop with its champion/challenger gate."""
