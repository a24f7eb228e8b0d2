"""The one exception type fxquant raises for bad input, so callers can catch it."""


class FxQuantError(ValueError):
    """Bad input to fxquant: the message names the problem and what to do about it."""
