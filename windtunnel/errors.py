"""The one exception family windtunnel raises for bad input; the CLI prints it as one line."""

__all__ = ["WindtunnelError", "SpecError", "one_line", "did_you_mean"]


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


def did_you_mean(name: str, known) -> str:
    """"did you mean 'x'? " for the known name closest to `name` (the same name in another case first, then a close
    spelling), or "" when none is close: the start of an error's list of allowed names."""
    import difflib

    known = [str(k) for k in known]
    close = [k for k in known if k.lower() == str(name).lower()] or difflib.get_close_matches(str(name), known, 1, 0.8)
    return f"did you mean {close[0]!r}? " if close else ""
