"""The one exception family windtunnel raises for bad input; the CLI prints it as one line."""

__all__ = ["WindtunnelError", "SpecError", "one_line"]


class WindtunnelError(Exception):
    """Any error a user can fix; its message says what is wrong and what is allowed."""


class SpecError(WindtunnelError):
    """A bad value in a spec: names the file, the key, the value and what is allowed."""

    def __init__(self, file, key: str, value, allowed: str):
        self.file, self.key, self.value, self.allowed = file, key, value, allowed
        super().__init__(f"{file}: {key}={value!r} is not allowed; {allowed}")

    def __reduce__(self):  # so the error crosses process boundaries (Ray tasks, process pools) intact
        return (SpecError, (self.file, self.key, self.value, self.allowed))


def one_line(err: BaseException) -> str:
    """The last non-empty line of an error (a remote traceback's message), at most 300 characters."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:300]
