"""Actuators: write indirection tables into the maps that steer SO_REUSEPORT socket selection
(:mod:`tuner.actuate.reuseport`) and XDP redirection (:mod:`tuner.actuate.xdp`)."""
