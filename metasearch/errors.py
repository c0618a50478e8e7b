"""Errors that reach the user as one line and exit status 2."""


class UsageError(Exception):
    """Bad input from the user: a flag, a file or a value.

    The CLI prints `metasearch: error: <message>` and exits with status 2, with
    no traceback. The message names the flag, file or value at fault.
    """

    exit_code = 2
