"""The exceptions that reach the user as a one-line message: bad input (exit status 2), a run that
stopped before its work was done (exit status 3), and operating-system errors mapped onto them."""

import errno


class UserError(Exception):
    """Bad input or setting: the message names the file:line or the setting, and the CLI prints only it."""


class RunIncomplete(Exception):
    """The run ended before its work was done (failed requests outstanding, target not reached, or
    the endpoint stopped serving): the CLI prints the one-line reason and exits with status 3."""


def require_extra(extra: str, modules: tuple[str, ...], what: str) -> None:
    """Import ``modules`` or fail in one line that names the extra to install (exit status 2)."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise UserError(
                f"{what} needs the '{extra}' extra ({name} is not installed): "
                f"pip install 'self-instruct[{extra}]'"
            ) from None


# The operating system's "no room left": the run stopped, and resumes once space is freed.
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def os_error(e: OSError) -> UserError | RunIncomplete:
    """An operating-system error as the one line the user sees, naming the path: a full disk stops
    a run that can resume (exit status 3); anything else (a read-only file system, no permission, a
    name too long, a file where a directory should be) is bad input (exit status 2)."""
    path = e.filename if e.filename is not None else ""
    where = f"{path}: " if path else ""
    what = e.strerror or str(e)
    if e.errno in NO_SPACE:
        return RunIncomplete(
            f"{where}{what}; everything written so far is kept: free some space, then run the same "
            "command again to resume"
        )
    hint = {
        errno.EROFS: "choose another --output-dir",
        errno.EACCES: "choose another --output-dir or fix its permissions",
        errno.EPERM: "choose another --output-dir or fix its permissions",
        errno.ENAMETOOLONG: "choose a shorter name",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
        errno.EEXIST: "a file is in the way of a directory",
        errno.EISDIR: "a directory is in the way of a file",
    }.get(e.errno or 0)
    return UserError(f"{where}{what}" + (f" ({hint})" if hint else ""))


def failure_cause(error: str) -> str:
    """The one classification of a failed request's error text into its cause, as counted and shown
    everywhere (engine stats, the breaker, the manifest): '500 server error', 'timeout', '429 rate
    limited', without the message after the colon or the attempt count."""
    return error.split(":")[0].split(" (after")[0][:60]


def is_throttled(error: str) -> bool:
    """A 429, or a 503 that says the server is overloaded: the server slowing us down, not failing.
    Neither the breaker nor the resting of an endpoint counts it as a failure; the retry waits as
    the server asks, and the endpoint's concurrency window is cut (llm.ratelimit.Gate)."""
    return error.startswith(("429", "503 overloaded"))
