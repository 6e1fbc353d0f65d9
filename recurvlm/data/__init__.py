"""Data: procedural stimuli, Dataset wrappers and the interchange folder format."""
