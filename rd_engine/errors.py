"""Errors that are the user's to fix.

A `UserError` is printed as one line (no traceback) by the CLI, and the run
moves on to the next video where that makes sense.
"""


class UserError(Exception):
    """A mistake in the input, the settings or the environment that the user can fix."""
