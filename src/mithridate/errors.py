"""Errors a user can act on. The CLI prints them as one line, never a traceback."""


class MithridateError(Exception):
    """Base class: something the user can fix (bad input, bad option)."""


class DataError(MithridateError, ValueError):
    """The data cannot be read or does not make a usable dataset."""
