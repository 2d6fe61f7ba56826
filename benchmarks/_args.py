"""The benchmarks' one positional number (a budget in seconds, a number of epochs), read from the
command line: a bad one ends the script with one line, not a traceback."""

import math
import sys


def positive(benchmark, default, kind=float, what="budget in seconds"):
    """``sys.argv[1]`` as a finite ``kind`` above 0, or ``default`` when it is not given."""
    if len(sys.argv) < 2:
        return default
    text = sys.argv[1]
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        number = "a whole number" if kind is int else "a number"
        sys.exit(f"{benchmark} benchmark: the {what} must be {number} above 0, got {text!r}")
    return value
