"""Errors a user can fix. Their message names the input and says what to do."""


class InputError(ValueError):
    """A request input is unusable. The message names the input and the fix."""


class WeightsError(RuntimeError):
    """Weights for a variant are missing or broken. The message names the fix."""


def check_range(name: str, value: float, low: float, high: float) -> None:
    """The server's schema already enforces ranges; this keeps direct calls honest."""
    if not low <= value <= high:
        raise InputError(f"{name}={value} is out of range: use a value from {low} to {high}.")


def check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        listed = ", ".join(f'"{choice}"' for choice in choices)
        raise InputError(f"{name} {value!r} is not supported. Choose one of: {listed}.")
