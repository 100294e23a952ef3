"""From predicted load to an indirection table (see :mod:`tuner.policy.shares`)."""
