"""The one exception type that reaches the user as a one-line message (exit status 2)."""


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
