"""Reuseport groups of real servers: their sockets and the worker that serves each.

- :mod:`tuner.group.procfs`: the reads from ``/proc``, live or recorded.
- :mod:`tuner.group.discover`: :func:`discover`, the map for the three server shapes.
"""

from tuner.group.discover import Group, GroupSocket, Worker, discover

__all__ = ["Group", "GroupSocket", "Worker", "discover"]
