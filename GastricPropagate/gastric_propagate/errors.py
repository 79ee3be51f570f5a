"""Errors the engine raises for input a user can fix. Each message says what to do."""


class InputError(ValueError):
    """Bad input (image, annotation, geometry, paths): the message tells the user how to fix it."""


class WeightsError(RuntimeError):
    """Missing, corrupt or incompatible model weights: the message says which file and what to do."""


class Cancelled(RuntimeError):
    """The caller asked the propagation to stop; nothing was written."""


def last_line(error: Exception) -> str:
    """The last non-empty line of an error's message: ITK's say there what went wrong, after where in its code."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else error.__class__.__name__
