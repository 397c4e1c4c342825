"""Errors that mean "the user asked for something that cannot be done".

The CLI prints these as one line and exits non-zero, without a traceback; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["DataLayoutError", "UnknownBandError", "UnknownSensorError", "UserInputError"]


class UserInputError(ValueError):
    """Bad input from the user: a name, a size, a path or a file the toolkit cannot use."""


class UnknownSensorError(UserInputError):
    """A sensor name that the registry does not know."""


class UnknownBandError(UserInputError):
    """A band name that the chosen sensor does not have."""


class DataLayoutError(UserInputError):
    """A data set folder that is missing or not in the layout a reader expects."""
