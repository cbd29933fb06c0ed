"""Progress of a run: step names and timings on stderr, and the warnings kept for the report.

Each step of :func:`clvbayes.pipeline.run_report` runs inside :meth:`Progress.step`, which
records the clvbayes warnings raised in it (printed on stderr and listed in
``model_summary.json`` under ``"warnings"``) and, with ``strict``, ends the run with
:class:`~clvbayes.run_options.StrictWarningError` once the step is done.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from clvbayes.errors import DataWarning, FitWarning
from clvbayes.run_options import StrictWarningError

__all__ = ["STRICT_CATEGORIES", "Progress"]

#: What ``strict`` escalates: DataWarning and FitWarning (ConvergenceWarning included).
STRICT_CATEGORIES = (DataWarning, FitWarning)


def _is_contract_warning(category: type[Warning]) -> bool:
    """DataWarning and FitWarning (ConvergenceWarning included): what --strict escalates."""
    return issubclass(category, STRICT_CATEGORIES)


def _is_clvbayes_warning(w: warnings.WarningMessage) -> bool:
    """DataWarning/FitWarning wherever raised, other UserWarnings raised by clvbayes code."""
    if issubclass(w.category, STRICT_CATEGORIES):
        return True
    if not issubclass(w.category, UserWarning):
        return False
    return str(w.category.__module__).startswith("clvbayes") or "clvbayes" in str(w.filename)


class Progress:
    """Step names with timings on stderr; collects clvbayes warnings for the report.

    With ``strict``, a DataWarning, FitWarning or ConvergenceWarning ends the step with
    :class:`StrictWarningError` (exit 2) once the step is done.  ``words`` rewrites warning
    texts (the command line writes the data layer's argument names as flags).
    """

    def __init__(
        self, quiet: bool, strict: bool = False, words: Callable[[str], str] = str
    ) -> None:
        self.quiet = quiet
        self.strict = strict
        self.words = words
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self.current: str | None = None
        self.report_written = False
        self._t0 = time.perf_counter()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.say(f"clvbayes: {name} ...")
        self.current = name
        t0 = time.perf_counter()
        escalate: list[str] = []
        failed = True
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield
            failed = False
        finally:
            seen = set(self.warnings)
            for w in caught:
                if not _is_clvbayes_warning(w):
                    continue
                text = f"{w.category.__name__}: {self.words(str(w.message))}"
                if text in seen:
                    continue
                seen.add(text)
                self.warnings.append(text)
                contract = _is_contract_warning(w.category)
                if self.strict and contract:
                    escalate.append(text)
                elif contract or not self.quiet:  # data/fit warnings print even when --quiet
                    print(f"clvbayes: warning: {text}", file=sys.stderr, flush=True)
        elapsed = time.perf_counter() - t0
        self.timings[name] = round(elapsed, 3)
        if escalate and not failed:
            raise StrictWarningError(
                f"--strict turns warnings into errors, and {name} raised "
                f"{len(escalate)}: {' | '.join(escalate)} Fix the input, accept the warning "
                "with the option its message names, or run without --strict (the warning "
                'is then printed and recorded in model_summary.json under "warnings").'
            )
        self.current = None
        self.say(f"clvbayes: {name}: done in {elapsed:.1f} s")

    @property
    def total(self) -> float:
        return time.perf_counter() - self._t0
