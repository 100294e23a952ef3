r"""The one exception type that tuner raises for problems a user can fix.

The command line catches :class:`TunerError` at the top and prints its message on one line,
without a traceback (``--debug`` shows it). Messages name the problem and the fix.

>>> from tuner.errors import TunerError
>>> str(TunerError("tracefs is not mounted", fix="mount -t tracefs tracefs /sys/kernel/tracing"))
'tracefs is not mounted; fix: mount -t tracefs tracefs /sys/kernel/tracing'
>>> print(TunerError("unknown section [a\nb]"))  # what it quotes cannot break the line
unknown section [a\nb]
"""

from __future__ import annotations


class TunerError(Exception):
    """A problem the user can fix: bad input, a missing kernel feature, a process that is gone.

    Parameters
    ----------
    problem : str
        What is wrong, in one sentence without a trailing period.
    fix : str, optional
        What to do about it.
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        text = f"{self.problem}; fix: {self.fix}" if self.fix else self.problem
        return text.replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever it quotes
