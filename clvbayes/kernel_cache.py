"""Is numba's on-disk cache of clvbayes' compiled kernels filled for this installation?

Every numba kernel of clvbayes is compiled with ``cache=True``: the first run after an
install (or after the cache is emptied, or the source changes) compiles them, and later runs
load them from disk.  On the bundled data a first NUTS run compiles ~7 s in the job's process
and ~3.5 s in a worker process (:func:`clvbayes.pipeline.warm_up_scoring`), and takes ~4 s
longer than the next one on two cores.  :func:`uncached_kernels` says which kernels
would be compiled, so that ``clvbayes run`` can report the one-off cost as such instead of
leaving a user to wonder why the first run is slower.

This reads numba's cache index (the ``.nbi`` file next to the module, or under
``NUMBA_CACHE_DIR``), whose stamp is the source file's modification time and size: an
entry is valid only for the source it was compiled from.  The check uses numba's internal
cache objects; if a numba release changes them, every kernel is reported as unknown
(``None``) rather than guessed.
"""

from __future__ import annotations

import importlib

#: Modules holding the cached kernels the main job uses.
KERNEL_MODULES = (
    "clvbayes.math._special",
    "clvbayes.math.bgnbd",
    "clvbayes.math.gamma_gamma",
    "clvbayes.math.pnbd",
    "clvbayes.predict.clv",
    "clvbayes.predict.summary",
)


def cached_dispatchers() -> dict[str, object]:
    """``{"module.function": numba dispatcher}`` for every kernel compiled with ``cache=True``."""
    out = {}
    for name in KERNEL_MODULES:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if getattr(obj, "_cache", None) is not None and hasattr(obj, "py_func"):
                if type(obj._cache).__name__ == "FunctionCache":
                    out[f"{name}.{attr}"] = obj
    return out


def uncached_kernels() -> list[str] | None:
    """Names of the kernels with no valid on-disk cache entry (compiled on first use).

    Returns
    -------
    list of str or None
        Empty when every kernel loads from the cache; ``None`` when the cache cannot be
        inspected (numba's internals changed).
    """
    missing = []
    try:
        for name, dispatcher in cached_dispatchers().items():
            if not dispatcher._cache._cache_file._load_index():
                missing.append(name)
    except (AttributeError, OSError, TypeError, ValueError):
        return None
    return missing


#: The kernel every scoring run uses: without its cache entry the run is a first run.
SCORING_KERNEL = "clvbayes.predict.summary._row_stats_kernel"


def first_run_notice() -> str | None:
    """A line for the progress output when this run will compile the scoring kernels."""
    missing = uncached_kernels()
    if not missing or SCORING_KERNEL not in missing:
        return None
    return (
        f"first run on this installation: {len(missing)} numba kernels are compiled as they "
        "are first used (a one-off of several seconds; later runs load them from the cache)"
    )
