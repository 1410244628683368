"""Errors that are the user's to fix.

A `UserError` is printed as one line (no traceback) by the CLI, and the run
moves on to the next video where that makes sense. Errors are worded in the
terms of the Python API; a `SettingError` names the setting, and the CLI words
it with the flag that sets it (`rd_engine.cli.args.worded`).
"""


class UserError(Exception):
    """A mistake in the input, the settings or the environment that the user can fix."""


class SettingError(UserError):
    """A setting with an invalid value.

    Args:
        name: The setting, as the API spells it (e.g. "refine_step").
        problem: What is wrong, to follow the name (e.g. "must be >= 0, got -1").
    """

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name} {problem}")
        self.name = name
        self.problem = problem


def needs_extra(module: str, extra: str, what: str) -> None:
    """Raise a UserError that names the optional extra to install when `module` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(f"{what} needs the {module} package: pip install 'rd-engine[{extra}]'")
