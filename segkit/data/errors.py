"""The one error type the data layer raises for bad user input.

A `DataError` message names the file, split or recipe field at fault and says how to fix it, so the
CLI can print it as is instead of a traceback. It subclasses ValueError so callers that already catch
ValueError (recipe checks, argument parsing) keep working.
"""

from __future__ import annotations


class DataError(ValueError):
    """Data that segkit cannot use as given: missing paths, unknown classes, bad masks, bad files."""
