"""Progress of vol25d's long loops (reading and preprocessing cases, training, path 2's view cache,
``predict``, ``evaluate``): a bar with ETA where someone watches, plain log lines where the output is a file.

Where it shows, by :func:`progress_mode`:

* ``"bar"``: a ``tqdm.auto`` bar (a widget in a Jupyter notebook, a text bar in a terminal) with ``i/N``,
  rate and ETA; in a terminal the log records the loop writes meanwhile are printed above the bar.
* ``"lines"``: when stderr is not a terminal and no notebook kernel runs (a log file, CI, ``nohup``), lines
  ``DESCRIPTION: i/N UNITs (P%), ELAPSED elapsed, ETA T[, postfix]`` at level INFO through the package's
  logging: every item of a loop of at most :data:`EVERY_ITEM_UP_TO` items, else every tenth of the loop and
  at least every :data:`LINE_SECONDS` seconds.
* ``"off"``: nothing, when the caller is quiet or logging is configured above INFO (``vol25d -q``).

The environment variable :data:`MODE_VARIABLE` (``VOL25D_PROGRESS``) picks the form instead of the
terminal test: ``bar``, ``lines``, ``off`` or ``auto`` (the default); quiet still wins.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import TypeVar

from vol25d.errors import InputError

__all__ = ["MODE_VARIABLE", "Progress", "progress_mode", "track"]

log = logging.getLogger(__name__)

MODE_VARIABLE = "VOL25D_PROGRESS"
_MODES = ("auto", "bar", "lines", "off")
# Lines mode: a loop this short gets a line per item; a longer one a line per tenth and at least one a minute.
EVERY_ITEM_UP_TO = 10
LINE_SECONDS = 60.0

T = TypeVar("T")


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (ipykernel, also when nbclient or papermill runs it headless)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython too old or half imported: not a kernel we can draw in
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _is_terminal(stream) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_mode(logger: logging.Logger = log, quiet: bool = False) -> str:
    """How progress shows now: ``"bar"``, ``"lines"`` or ``"off"`` (see the module's docstring).

    ``quiet``, or logging configured above INFO for ``logger``, gives ``"off"``. Without any logging
    configured (a script that never called ``logging.basicConfig``) a terminal or notebook still gets a bar,
    while lines, which would go nowhere, are off.

    Raises:
        InputError: :data:`MODE_VARIABLE` holds something else than ``auto``, ``bar``, ``lines`` or ``off``.
    """
    chosen = os.environ.get(MODE_VARIABLE, "").strip().lower() or "auto"
    if chosen not in _MODES:
        raise InputError(f"{MODE_VARIABLE}={os.environ[MODE_VARIABLE]!r} is not a progress mode; set it to one of "
                         f"{', '.join(_MODES)} or unset it")
    configured = logger.hasHandlers()
    if quiet or chosen == "off" or (configured and not logger.isEnabledFor(logging.INFO)):
        return "off"
    if chosen == "auto":
        chosen = "bar" if _in_notebook() or _is_terminal(sys.stderr) else "lines"
    return "off" if chosen == "lines" and not configured else chosen  # unconfigured, lines would go nowhere


def _duration(seconds: float) -> str:
    """``M:SS`` or ``H:MM:SS``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _percent(n: int, total: int) -> int:
    """``n`` of ``total`` in whole percent, rounded to nearest (halves up: 2/12 is 17); 100 only once the loop
    is done (199/200 is 99), and 100 for an empty loop."""
    if total <= 0:
        return 100
    percent = (200 * n + total) // (2 * total)
    return min(percent, 99) if n < total else percent


class Progress:
    """Progress of one loop of ``total`` items, as a bar, log lines or nothing (:func:`progress_mode`).

    Use it as a context manager (it closes the bar and stops redirecting log records) or loop over
    :meth:`over` (a run's epochs), call :meth:`update` after each item, and :meth:`set_postfix` or
    :meth:`set_description` to change what it shows; :func:`track` wraps a plain loop.

    Args:
        total: the number of items of the whole loop.
        description: what runs, shown before ``i/N``.
        unit: what one item is (``"case"``, ``"step"``).
        initial: items done before (a resumed run), counted in ``i`` but not in the rate.
        logger: the logger the lines go to, and whose level decides whether anything shows.
        quiet: show nothing.
        lines: ``False`` where the caller logs a line of its own per item (with :meth:`eta_text`): no lines then.
    """

    def __init__(self, total: int, description: str, *, unit: str = "case", initial: int = 0,
                 logger: logging.Logger = log, quiet: bool = False, lines: bool = True):
        self.total, self.description, self.unit, self.n = int(total), description, unit, int(initial)
        self.postfix: dict[str, str] = {}
        self.mode = progress_mode(logger, quiet)
        self._logger, self._lines = logger, lines and self.mode == "lines"
        self._initial, self._start = self.n, time.monotonic()
        self._last_line, self._last_tenth = self._start, self._tenth(self.n)
        self._bar, self._stack = None, ExitStack()
        if self.mode == "bar":
            self._open_bar()

    def _open_bar(self) -> None:
        from tqdm.auto import tqdm

        self._bar = self._stack.enter_context(
            tqdm(total=self.total, initial=self.n, desc=self.description, unit=self.unit, dynamic_ncols=True))
        if not any(cls.__module__ == "tqdm.notebook" for cls in type(self._bar).__mro__):
            from tqdm.contrib.logging import logging_redirect_tqdm

            # A log record printed while a text bar is drawn would break its line: print records above it.
            self._stack.enter_context(logging_redirect_tqdm(tqdm_class=type(self._bar)))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the bar (it stays on screen) and stop printing log records above it."""
        self._stack.close()

    def over(self, stages: Iterable[T], describe: Callable[[T], str]) -> Iterator[T]:
        """Yield ``stages`` (a run's epochs, each many items), the description ``describe(stage)`` set before
        each, and close this progress when the loop ends, breaks or raises (its generator is closed then)."""
        with self:
            for stage in stages:
                self.set_description(describe(stage))
                yield stage

    def _tenth(self, n: int) -> int:
        return n * 10 // self.total if self.total > 0 else 0

    def set_description(self, description: str) -> None:
        self.description = description
        if self._bar is not None:
            self._bar.set_description_str(description, refresh=False)

    def set_postfix(self, **values) -> None:
        """Values shown after the counts (``loss=0.41``); they replace earlier values of the same name."""
        self.postfix.update({name: str(value) for name, value in values.items()})
        if self._bar is not None:
            self._bar.set_postfix(self.postfix, refresh=False)

    def update(self, n: int = 1, **postfix) -> None:
        """``n`` more items done (and :meth:`set_postfix` of ``postfix``); in lines mode a line when one is due."""
        self.n += n
        if postfix:
            self.set_postfix(**postfix)
        if self._bar is not None:
            self._bar.update(n)
        if not self._lines:
            return
        now, tenth = time.monotonic(), self._tenth(self.n)
        if (self.total <= EVERY_ITEM_UP_TO or self.n >= self.total or tenth > self._last_tenth
                or now - self._last_line >= LINE_SECONDS):
            self._last_line, self._last_tenth = now, tenth
            self._logger.info("%s", self.line())

    def eta(self) -> float | None:
        """Seconds left at the rate of the items done since the start; ``None`` before the first."""
        done = self.n - self._initial
        if done <= 0:
            return None
        return (time.monotonic() - self._start) / done * max(self.total - self.n, 0)

    def eta_text(self) -> str:
        """:meth:`eta` as ``M:SS`` or ``H:MM:SS`` (``?`` before the first item), for a caller's own lines."""
        eta = self.eta()
        return "?" if eta is None else _duration(eta)

    def line(self) -> str:
        """The lines mode's line: ``DESCRIPTION: i/N UNITs (P%), E elapsed, ETA T[, name value …]``."""
        percent = _percent(self.n, self.total)
        extra = "".join(f", {name} {value}" for name, value in self.postfix.items())
        return (f"{self.description}: {self.n}/{self.total} {self.unit}s ({percent}%), "
                f"{_duration(time.monotonic() - self._start)} elapsed, ETA {self.eta_text()}{extra}")


def track(items: Iterable[T], description: str, *, total: int | None = None, unit: str = "case",
          logger: logging.Logger = log, quiet: bool = False) -> Iterator[T]:
    """Yield ``items`` with a :class:`Progress` of them (``total`` defaults to ``len(items)``); each item
    counts as done when the next is asked for."""
    total = len(items) if total is None else total
    with Progress(total, description, unit=unit, logger=logger, quiet=quiet) as progress:
        for item in items:
            yield item
            progress.update()
