"""Recorded traces, offline: replay them through the agent's channels (``tuner replay``),
train a model on them (``tuner train``), score a model on them (``tuner evaluate``).

- :mod:`tuner.offline.replay`: a trace through a fresh agent with a steering that writes
  nothing.
- :mod:`tuner.offline.train`: features from traces, a time-ordered split, boosted trees.
- :mod:`tuner.offline.evaluate`: a saved model against the last value, with counterfactual
  decisions.
"""
