"""Errors the engine raises for input a user can fix. Each message says what to do."""


class InputError(ValueError):
    """Bad input (image, annotation, geometry, paths): the message tells the user how to fix it."""


class WeightsError(RuntimeError):
    """Missing, corrupt or incompatible model weights: the message says which file and what to do."""


class Cancelled(RuntimeError):
    """The caller asked the propagation to stop; nothing was written."""
