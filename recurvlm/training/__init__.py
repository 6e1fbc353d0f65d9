"""Thin Lightning wrappers around the pure-torch models, and training callbacks."""
