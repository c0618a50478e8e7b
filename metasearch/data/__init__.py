"""Data sets and the episode sampler."""
