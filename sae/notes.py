"""One-line notes for the user from library code: what a command did differently from what was asked
(an optional model is missing, fewer items than requested, ...), in the command line's words.

    from ttslens.sae import notes

    notes.note("laughter evidence uses the backbone's detector: AST weights not found (pass --download)")
    with notes.collect() as got:        # a command records the notes given while it runs ...
        ...
    summary["notes"] = got
    for n in notes.drain():             # ... and the CLI prints each once: `ttslens label: note: ...`
        print(f"ttslens {cmd}: note: {n}", file=sys.stderr)

Thread-safe; notes are process-wide (a note given in any thread reaches every open `collect` block and
the CLI's queue), each message once per block and once per queue until drained.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_pending: list[str] = []  # given since the last drain()
_open: list[list[str]] = []  # the lists of the open collect() blocks


def note(message: str) -> None:
    """Give a one-line note (whitespace folded to single spaces)."""
    message = " ".join(str(message).split())
    if not message:
        return
    with _lock:
        for got in [_pending, *_open]:
            if message not in got:
                got.append(message)


@contextmanager
def collect() -> Iterator[list[str]]:
    """A list that receives, in order, every note given while the block runs."""
    got: list[str] = []
    with _lock:
        _open.append(got)
    try:
        yield got
    finally:
        with _lock:
            _open.remove(got)


def drain() -> list[str]:
    """The notes given since the last drain (for the CLI to print), oldest first; clears them."""
    with _lock:
        out = list(_pending)
        _pending.clear()
    return out


def load_optional(load: Callable[[], T | None], missing: str) -> T | None:
    """Run an optional model's loader (one that returns None when the model is absent) with its Python
    warnings silenced; when it gives None, note `missing` (what the run does instead, and the fix)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load()
    if model is None:
        note(missing)
    return model
