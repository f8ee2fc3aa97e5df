"""Errors that become OpenNebula answers.

Every failure leaves a driver as a non-zero exit code and a stderr whose *last* line is one plain
sentence (no ``ERROR:`` prefix): OpenNebula 7.x forwards ``ERROR:``/``INFO:`` lines as log messages
and uses the remaining lines as the failure reason, and 6.10 flattens the whole stderr, so a plain
last line reads well in both.

Exit codes (documented in README.md, stable for operators' scripts):

====  =====================  ==============================================================
code  class                  meaning
====  =====================  ==============================================================
0     -                      success
1     ActionFailed           the backend refused or the action could not complete
2     UsageError             wrong argv: unknown family/driver/action, wrong argument count
3     BadInput               stdin or argv could not be decoded/parsed, or lacks an attribute
4     BackendUnavailable     a service did not answer in time (retrying later may help)
5     PermissionDenied       credentials were refused by the backend
6     NotFound               an object the action needs does not exist
70    (any other exception)  a bug: the traceback is in the driver log, not on stderr
====  =====================  ==============================================================
"""

from __future__ import annotations

EXIT_INTERNAL = 70


class DriverError(Exception):
    """Base of every error a driver reports on purpose.

    ``subject`` names the object (``image 7``, ``datastore 100``, ``VM 42 NIC 0``), ``hint`` says
    what the operator can do. ``str()`` gives the one line OpenNebula shows.
    """

    exit_code = 1

    def __init__(self, message: str, *, subject: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.subject = subject
        self.hint = hint

    def __str__(self) -> str:
        line = f"{self.subject}: {self.message}" if self.subject else self.message
        if self.hint:
            line = f"{line.rstrip('.')}; {self.hint}"
        return " ".join(line.split())  # always exactly one line


class ActionFailed(DriverError):
    exit_code = 1


class UsageError(DriverError):
    exit_code = 2


class BadInput(DriverError):
    exit_code = 3


class MissingAttribute(BadInput):
    """A required XML element or template attribute is absent or empty."""


    def __init__(self, path: str, *, subject: str = "", hint: str = "") -> None:
        super().__init__(
            f"missing required attribute {path}",
            subject=subject,
            hint=hint or "set it in the template",
        )
        self.path = path


class BackendUnavailable(DriverError):
    exit_code = 4


class BackendTimeout(BackendUnavailable):
    pass


class PermissionDenied(DriverError):
    exit_code = 5


class NotFound(DriverError):
    exit_code = 6
