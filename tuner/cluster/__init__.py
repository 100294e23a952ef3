"""Test clusters: network namespaces on one machine (see :mod:`tuner.cluster.topology`)."""

from tuner.cluster.topology import Cluster, Host, down_all, leftovers

__all__ = ["Cluster", "Host", "down_all", "leftovers"]
