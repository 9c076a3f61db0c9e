"""Stand-alone tools, one per file (bcc tools/ style), each also a `python -m testbed` subcommand."""
from __future__ import annotations

import argparse


def positive(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return v
