"""Test clusters: network namespaces on one machine (see :mod:`tuner.cluster.topology`)."""

from tuner.cluster.netutil import down_all, leftovers
from tuner.cluster.topology import Cluster, Host

__all__ = ["Cluster", "Host", "down_all", "leftovers"]
