"""User-facing errors.

A `KarmaError` is a mistake the user can fix (bad input file, bad config value, missing package).
The CLI prints its message as one line and exits with status 2; it never shows a traceback for one.
Programming errors stay ordinary exceptions so their tracebacks reach a bug report.
"""

from __future__ import annotations


class KarmaError(Exception):
    """An error caused by user input; the message says what is wrong and what to do."""


class ConfigError(KarmaError):
    """A configuration value is missing, unknown or invalid."""


class DataError(KarmaError):
    """An input data file is missing, malformed or inconsistent."""
