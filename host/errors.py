"""User-facing errors: each names the problem and what to do about it.

The CLI prints `error: <message>` (and the hint) and exits non-zero; it never shows a traceback for
these. Anything else escaping is a bug in cqtf.
"""


class CqtfError(Exception):
    """A problem the user can fix. `hint` says how."""

    exit_code = 2

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ToolchainError(CqtfError):
    """The cross compiler, PlatformIO or QEMU is missing or failed."""


class DeviceError(CqtfError):
    """The device did not answer, answered garbage, or the port could not be opened."""


class ModelMismatchError(CqtfError):
    """The firmware on the device carries another model than the one on the host."""


class DataError(CqtfError):
    """A data or model file is missing, corrupt or of the wrong shape."""


class MismatchFound(CqtfError):
    """Device outputs differ from the host simulation (the run completed; the report says where)."""

    exit_code = 3


class Interrupted(CqtfError):
    """Ctrl-C during a validation: what was done is saved for --resume."""

    exit_code = 130
