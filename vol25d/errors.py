"""The exception a user sees as one sentence.

Library code raises :class:`InputError` (a ``ValueError``) or ``FileNotFoundError`` for problems with the
user's files, arguments or checkpoints; the message names the file or argument, what was seen and how to
fix it. The CLI prints it as one red line and exits 1.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input a user can fix: a file, an argument, a checkpoint. The message is the whole explanation."""
