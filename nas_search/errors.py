"""User-facing errors.

Anything raised as :class:`UserError` is a problem with what the user supplied (a budget
string, a config, a data folder, a checkpoint, a storage URL).  The CLI prints its message
as one line and exits with status 2, without a traceback.
"""


class UserError(ValueError):
    """Bad user input. The message names the bad value and what is accepted."""

    exit_code = 2
