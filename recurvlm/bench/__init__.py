"""Benchmarks: `python -m recurvlm.bench {stimuli,shortcuts}`. Speed and leak figures live here, not in tests."""
