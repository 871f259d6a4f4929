"""The one exception type that reaches the user as a one-line message (exit status 2)."""


class UserError(Exception):
    """Bad input or setting: the message names the file:line or the setting, and the CLI prints only it."""


class RunIncomplete(Exception):
    """The run ended before its work was done (failed requests outstanding, target not reached, or
    the endpoint stopped serving): the CLI prints the one-line reason and exits with status 3."""
