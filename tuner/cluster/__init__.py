"""Experiment hosts: network namespaces on one machine (:mod:`tuner.cluster.topology`), or
machines reached over SSH (:mod:`tuner.cluster.remote`)."""

from tuner.cluster.netutil import down_all, leftovers
from tuner.cluster.remote import SshHosts
from tuner.cluster.topology import Cluster, Host

Hosts = Cluster | SshHosts  # what the experiment runner runs on

__all__ = ["Cluster", "Host", "Hosts", "SshHosts", "down_all", "leftovers"]
