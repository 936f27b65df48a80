"""Argument checks shared by the layers and the model builders.

Each check raises `ValueError` naming the argument and the received value, in the Keras style
("Received: reduction=0").
"""

import numbers


def check_positive_int(name, value):
    """Returns `value` if it is an int >= 1 (bools refused), else raises `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def check_non_negative_int(name, value):
    """Returns `value` if it is an int >= 0 (bools refused), else raises `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
    return int(value)


def check_rate(name, value):
    """Returns `value` as a float if it lies in [0, 1), else raises `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be a float in [0, 1). Received: {name}={value!r}")
    return float(value)


def check_choice(name, value, choices):
    """Returns `value` if it is one of `choices`, else raises `ValueError` listing them."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {options}. Received: {name}={value!r}")
    return value


def check_bool(name, value):
    """Returns `value` if it is a bool, else raises `ValueError`."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return value
