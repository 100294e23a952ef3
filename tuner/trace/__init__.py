"""Traces: what the agent saw and did, window by window, in Apache Parquet (the format only;
recording is the agent's, :mod:`tuner.agent.record`, and replay, training and evaluation are
:mod:`tuner.offline`'s).

- :mod:`tuner.trace.schema`: the columns, their units, the metadata and its version.
- :mod:`tuner.trace.writer`: :class:`TraceWriter`, parts that roll over and survive a crash.
- :mod:`tuner.trace.reader`: :func:`read_trace`, with one-line errors for bad input.
"""
