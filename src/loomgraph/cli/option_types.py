"""Types of the command's numeric options: a value that cannot work is argparse's usage error
naming the option the user typed (`argument --heartbeat: must be …`), not the keyword of the
object it is passed to (`heartbeat_seconds must be …`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from loomgraph._storage.seconds import checked_seconds

# The longest period an option of seconds takes: a day, as `WorkerOptions` and `create_app`
# bound theirs (not imported: parsing the command line loads neither).
MAX_SECONDS = 86400.0


def seconds(most: float = MAX_SECONDS) -> Callable[[str], float]:
    """A number of seconds > 0 and at most `most`, checked as the library checks it."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
        try:
            return checked_seconds("", value, most=most)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).strip()) from None

    return parse


def count(least: int) -> Callable[[str], int]:
    """An int of at least `least`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int, not {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
        return value

    return parse
