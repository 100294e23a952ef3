"""tuner: watch a workload through eBPF, learn where its hotspots will be, steer the kernel away.

The package is split by stage; each stage is a subpackage or module with a small interface:

- ``tuner.probes``   BPF programs that aggregate kernel events into per-window records
- ``tuner.learn``    online learners (river) that predict the next window's hotspots
- ``tuner.policy``   turns predictions into indirection tables
- ``tuner.actuate``  writes tables into the BPF maps that steer XDP and SO_REUSEPORT
- ``tuner.doctor``   checks that this machine can run all of the above

>>> import tuner
>>> tuner.__version__
'0.1.0'
"""

__version__ = "0.1.0"
