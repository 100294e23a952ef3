"""Traces: what the agent saw and did, window by window, in Apache Parquet.

- :mod:`tuner.trace.schema`: the columns, their units, the metadata and its version.
- :mod:`tuner.trace.writer`: :class:`TraceWriter`, parts that roll over and survive a crash.
- :mod:`tuner.trace.reader`: :func:`read_trace`, with one-line errors for bad input.
- :mod:`tuner.trace.replay`: a trace fed through the live agent's learner and policy.
"""
