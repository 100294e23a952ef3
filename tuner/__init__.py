"""tuner: watch a workload through eBPF, learn where its hotspots will be, steer the kernel away.

The package is split by stage; each stage is a subpackage with a small interface
(docs/architecture.md has the diagram of how they depend on each other, one way):

- ``tuner.probes``      BPF programs that aggregate kernel events into per-window frames
- ``tuner.group``       which worker (process or thread) serves each socket of a group
- ``tuner.learn``       online and offline models that predict the next window's load
- ``tuner.policy``      predicted load to an indirection table (and hot flows pinned apart)
- ``tuner.actuate``     the steering interface and the XDP / SO_REUSEPORT programs
- ``tuner.window``      the typed record of one window, what every consumer reads
- ``tuner.trace``       the trace format (Parquet)
- ``tuner.agent``       channels, the loop, ``tuner run``, its control socket and metrics
- ``tuner.offline``     replay, train and evaluate on recorded traces
- ``tuner.cluster``, ``tuner.workload``, ``tuner.experiment``  test clusters and experiments
- ``tuner.bench``, ``tuner.observe``, ``tuner.doctor``  costs, live views, machine checks

>>> import tuner
>>> tuner.__version__
'0.1.0'
"""

__version__ = "0.1.0"
