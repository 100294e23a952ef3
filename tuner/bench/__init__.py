"""Benchmarks: ``tuner bench <name>``. Each measures its variants side by side in one run and
reports ratios, because the machines this runs on are shared and noisy."""
