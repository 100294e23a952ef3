"""Tuning experiments: specs, the runner of arms, and the reports."""
