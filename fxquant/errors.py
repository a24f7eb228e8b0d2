"""The exceptions fxquant raises for bad input, so callers can catch them."""


class FxQuantError(ValueError):
    """Bad input to fxquant: the message names the problem and what to do about it."""


class ExportMismatch(FxQuantError):
    """An exported file that disagrees with fxquant's PyTorch numerics on the example, refused.
    `error` is the relative error measured, so a benchmark can report the refusal and still score
    the file written with verify=False."""

    def __init__(self, message: str, error: float):
        super().__init__(message)
        self.error = error
