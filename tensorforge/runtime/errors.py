"""The exceptions the runtime raises once the arguments are checked and native code is involved.

Argument problems are `tensorforge.ir.InputError` (raised before any native code runs).
"""


class NativeError(RuntimeError):
    """The compiled code ran and returned a non-zero status from tf_run."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class RunnerError(RuntimeError):
    """The runner program of a foreign target (under qemu-user) failed to start, crashed or misbehaved.

    The runner is restarted on the next call.
    """


class RunnerTimeoutError(RunnerError):
    """The runner did not answer within the per-call timeout; it was killed (and restarts on the next call)."""


class ToolMissingError(RuntimeError):
    """A program needed to run a foreign target (cross compiler, qemu-user) is not installed."""
