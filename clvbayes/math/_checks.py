"""Input checks shared by the model math modules (NumPy inputs only).

The PyTensor path of each log-likelihood receives data already checked by the caller;
these helpers validate arguments of the NumPy functions and say what is wrong, where
(positions of the first offending entries) and which values.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from clvbayes.errors import ModelError

MAX_SHOWN = 5
"""How many offending positions or values an error message lists."""


def as_float(name: str, value: ArrayLike) -> np.ndarray:
    """``value`` as a float array; a clear error if it is not numeric."""
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {value!r}.") from exc


def positions(mask: np.ndarray) -> str:
    """The first flat positions where ``mask`` is true, formatted for a message."""
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in idx[:MAX_SHOWN])
    return f"[{shown}{', ...' if idx.size > MAX_SHOWN else ''}]"


def check_parameters(model: str, **params: ArrayLike) -> list[np.ndarray]:
    """Return the parameters as float arrays; raise if any value is not positive and finite.

    Raises :class:`~clvbayes.errors.ModelError` (a ValueError) naming the parameter, how many
    draws violate the domain and their first positions: a draw at 0, negative, NaN or
    infinite is outside every formula's domain (the closed forms are finite for any
    positive finite parameters).
    """
    out = []
    for name, value in params.items():
        arr = as_float(name, value)
        bad = ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            raise ModelError(
                f"{model} parameter {name} must be positive and finite; "
                f"{int(bad.sum())} of {arr.size} values are not "
                f"(e.g. {name} = {arr.ravel()[bad.ravel()][0]!r}, at positions "
                f"{positions(bad)}). Check the posterior draws or the values passed."
            )
        out.append(arr)
    return out


def as_counts(counts: ArrayLike, name: str) -> np.ndarray:
    """Non-negative whole numbers as int64; a clear error otherwise."""
    arr = as_float(name, counts)
    bad = ~(np.isfinite(arr) & (arr >= 0) & (arr == np.floor(arr)))
    if bad.any():
        raise ValueError(
            f"{name} must be non-negative whole numbers; {int(bad.sum())} entries are not, "
            f"at positions {positions(bad)}."
        )
    return arr.astype(np.int64)


def scalar_if_0d(out: np.ndarray) -> np.ndarray | float:
    """A Python float for 0-d results, the array otherwise."""
    out = np.asarray(out, dtype=float)
    return out[()] if out.ndim == 0 else out


def check_history(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the customer columns (frequency, recency, T); return them as float arrays."""
    x = as_float("frequency", frequency)
    t_x = as_float("recency", recency)
    T = as_float("T", T)
    for name, arr, what in (
        ("frequency", x, "a finite, non-negative number of repeat purchases"),
        ("recency", t_x, "a finite, non-negative time"),
        ("T", T, "a finite, non-negative time"),
    ):
        bad = ~(np.isfinite(arr) & (arr >= 0))
        if bad.any():
            raise ValueError(
                f"{name} must be {what}; {int(bad.sum())} entries violate it at positions "
                f"{positions(bad)} (values {arr.ravel()[bad.ravel()][:MAX_SHOWN].tolist()})."
            )
    try:
        t_x_b, T_b = np.broadcast_arrays(t_x, T)
        np.broadcast_shapes(x.shape, T.shape)
    except ValueError as exc:
        raise ValueError(
            f"frequency (shape {x.shape}), recency (shape {t_x.shape}) and T (shape {T.shape}) "
            "must have the same length, one entry per customer."
        ) from exc
    bad = t_x_b > T_b
    if bad.any():
        raise ValueError(
            f"recency must not exceed T; {int(bad.sum())} customers have recency > T at "
            f"positions {positions(bad)} (recency {t_x_b[bad][:MAX_SHOWN].tolist()}, "
            f"T {T_b[bad][:MAX_SHOWN].tolist()}).  recency is the time from the first to the "
            "last repeat purchase and T the time from the first purchase to the end of the "
            "calibration period, both in the same time unit."
        )
    return x, t_x, T


def check_horizon(t: ArrayLike, name: str = "t") -> np.ndarray:
    t = as_float(name, t)
    bad = ~(np.isfinite(t) & (t >= 0))
    if bad.any():
        raise ValueError(
            f"{name} (a time horizon in the data's time unit) must be finite and >= 0; "
            f"got {t.ravel()[bad.ravel()][:MAX_SHOWN].tolist()}."
        )
    return t
