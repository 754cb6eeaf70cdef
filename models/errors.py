"""Errors a user can fix. Their message names the input and says what to do."""


class InputError(ValueError):
    """A request input is unusable. The message names the input and the fix."""


class WeightsError(RuntimeError):
    """Weights for a variant are missing or broken. The message names the fix."""
