"""A weighted mixture of fitted purchase models, on the :class:`PurchaseModel` protocol.

Model averaging by mixing posterior draws (Yao, Vehtari, Simpson & Gelman 2018, "Using
Stacking to Average Bayesian Predictive Distributions", Bayesian Analysis 13(3), 917-1007):
the predictive distribution of the mixture is ``sum_k w_k p(y | model k)``, so a sample from
it is a sample of draws in which a share ``w_k`` comes from model ``k``'s joint posterior.
:class:`MixturePurchaseModel` holds such a sample and implements every method of
:class:`~clvbayes.models.protocols.PurchaseModel` by handing each row of draws to its own
component, so :func:`clvbayes.predict.score_customers` works on it unchanged: per-customer
and segment intervals then include the disagreement between the models as well as each
model's parameter uncertainty and the customers' own randomness.

Draws (:meth:`MixturePurchaseModel.draws`, one chain of ``S`` draws):

* ``component``: the index (0, 1, ...) of the model each draw comes from, as a float;
* ``{key}:{param}``: component ``key``'s parameter ``param``; in the rows of the other
  components it holds a copy of one of ``key``'s own draws (never used: every method
  dispatches a row only to its own component).

Allocation is deterministic: component ``k`` gets ``n_k = round(w_k S)`` draws (largest
remainders, so ``sum n_k = S``), its own draws evenly thinned (:func:`clvbayes.predict.
joint_draws`' rule), and the components' draws come in consecutive blocks (in the order of
``models``), so any evenly thinned subset of the mixture (``score_customers(..., n_draws=...)``)
keeps the weights to within one draw per component (a regular interleaving would not: a
stride in step with its pattern sees one component only).  With weight 1 on one model and ``S`` its number of draws, the mixture's
draws are that model's, in order, and every prediction (same seed) is that model's exactly.

Latent state of simulated customers (``_active_state``/``_advance``): ``component`` per cell
plus each component's latent variables prefixed ``{key}:`` (zeros in other components' cells).

Every component must be on one time grid (continuous time: BG/NBD, MBG/NBD, Pareto/NBD;
discrete opportunities: BG/BB), with the same history columns and time unit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.models.protocols import PurchaseModel, check_implements, time_grid

__all__ = ["MIN_DRAWS", "MixturePurchaseModel", "allocate_draws"]

#: Fewest draws of a mixture of several models by default (weights resolved to 1/1000).
MIN_DRAWS = 1000


def allocate_draws(weights: Sequence[float], n_draws: int) -> np.ndarray:
    """Draws per component: ``round(w_k n_draws)`` by largest remainders (they add up to
    ``n_draws``; ties go to the first component)."""
    w = np.asarray(weights, dtype=float)
    raw = w * n_draws
    n = np.floor(raw).astype(np.int64)
    short = int(n_draws - n.sum())
    if short > 0:
        order = np.argsort(-(raw - n), kind="stable")
        n[order[:short]] += 1
    return n


class MixturePurchaseModel:
    """A weighted mixture of fitted purchase models (model averaging by draws).

    Parameters
    ----------
    models : mapping of str to PurchaseModel, or sequence of them
        Fitted purchase models on one time grid (keys such as ``bgnbd``; a sequence gets
        the keys ``"0"``, ``"1"``, ...).
    weights : mapping of str to float, or sequence of float
        Non-negative weights, one per model (e.g. :func:`clvbayes.predict.averaging.
        stacking_weights`); normalised to add up to 1.
    n_draws : int, optional
        Draws ``S`` of the mixture (default: the largest number of draws of a model with
        positive weight, and at least :data:`MIN_DRAWS` when several have one).  A
        component with fewer draws than its share repeats its draws evenly.

    Attributes
    ----------
    keys : list of str
        Component keys, in order (``component`` index ``i`` is ``keys[i]``).
    weights : pandas.Series
        The normalised weights by key.
    n_per_component : pandas.Series
        Draws of each component in the mixture (``round(weight x S)``).
    history_columns, active_columns : tuple of str
        Those of the components (the active columns: all of theirs).
    time_unit_ : str or None
        The components' time unit.

    Examples
    --------
    >>> mix = MixturePurchaseModel({"bgnbd": bg, "pnbd": pn}, [0.7, 0.3])  # doctest: +SKIP
    >>> score_customers(rfm, mix, gg, horizon=39)  # doctest: +SKIP
    """

    display_name = "model average"

    def __init__(
        self,
        models: Mapping[str, Any] | Sequence[Any],
        weights: Mapping[str, float] | Sequence[float],
        *,
        n_draws: int | None = None,
    ) -> None:
        if isinstance(models, Mapping):
            keys = [str(k) for k in models]
            comps = list(models.values())
        else:
            comps = list(models)
            keys = [str(i) for i in range(len(comps))]
        if not comps:
            raise ValueError("MixturePurchaseModel needs at least one purchase model.")
        if isinstance(weights, Mapping):
            unknown = sorted(set(map(str, weights)) - set(keys))
            if unknown:
                raise ValueError(
                    f"weights name model(s) {unknown} that are not among the models {keys}."
                )
            w = np.array([float(weights.get(k, 0.0)) for k in keys])
        else:
            w = np.asarray(list(weights), dtype=float)
        if w.shape != (len(comps),):
            raise ValueError(
                f"weights needs one value per model ({len(comps)}: {keys}), got {w.size}."
            )
        if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
            raise ValueError(
                f"weights must be non-negative and finite with a positive sum, got {w.tolist()}."
            )
        for key, m in zip(keys, comps, strict=True):
            check_implements(m, PurchaseModel, f"models[{key!r}]")
        self._check_grid(keys, comps)
        self.keys = keys
        self.models = dict(zip(keys, comps, strict=True))
        self.weights = pd.Series(w / w.sum(), index=keys, name="weight")
        self.history_columns = tuple(comps[0].history_columns)
        self.active_columns = tuple(dict.fromkeys(c for m in comps for c in m.active_columns))
        units = {getattr(m, "time_unit_", None) for m in comps} - {None}
        if len(units) > 1:
            raise ValueError(
                "MixturePurchaseModel: the models were fitted in different time units "
                f"({', '.join(sorted(units))}); fit them all on one customer table."
            )
        self.time_unit_ = units.pop() if units else None
        flat = [{k: np.asarray(v, dtype=float).reshape(-1) for k, v in m.draws().items()}
                for m in comps]  # fmt: skip
        sizes = [next(iter(f.values())).size for f in flat]
        if n_draws is None:
            used = [s for s, wk in zip(sizes, self.weights, strict=True) if wk > 0]
            # at least MIN_DRAWS when several models mix, so that point fits (MAP: one draw
            # each) still get their weights
            n_draws = max(used) if len(used) == 1 else max(*used, MIN_DRAWS)
        if int(n_draws) < 1:
            raise ValueError(f"n_draws must be >= 1, got {n_draws}.")
        n_draws = int(n_draws)
        counts = allocate_draws(self.weights.to_numpy(), n_draws)
        self.n_per_component = pd.Series(counts, index=keys, name="n_draws")
        # consecutive blocks, one per component: an evenly spaced subset of S draws then
        # keeps every block's share to within one draw (a regular interleaving would alias)
        component = np.repeat(np.arange(len(keys)), counts)
        draws = {"component": component.astype(float)}
        for i, (key, f, size) in enumerate(zip(keys, flat, sizes, strict=True)):
            rows = np.flatnonzero(component == i)
            own = np.linspace(0, size - 1, rows.size).round().astype(int) if rows.size else []
            for name, v in f.items():
                col = np.full(n_draws, v[0])
                col[rows] = v[own]
                draws[f"{key}:{name}"] = col
        self._draws = {k: v[None, :] for k, v in draws.items()}

    @staticmethod
    def _check_grid(keys: list[str], comps: list[Any]) -> None:
        grids = {k: time_grid(m) for k, m in zip(keys, comps, strict=True)}
        known = {g for g in grids.values() if g is not None}
        cols = {tuple(m.history_columns) for m in comps}
        if len(known) > 1 or len(cols) > 1:
            words = {"continuous": "continuous time", "discrete": "discrete opportunities"}
            desc = ", ".join(
                f"{k} ({type(m).__name__}: {words.get(grids[k], 'history ' + str(m.history_columns))})"
                for k, m in zip(keys, comps, strict=True)
            )
            raise ValueError(
                f"MixturePurchaseModel: the models are not on one time grid ({desc}). A "
                "mixture needs one customer table for all of them: mix continuous-time models "
                "(bgnbd, mbgnbd, pnbd) or discrete-time ones (bgbb), not both."
            )

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={w:.3f}" for k, w in self.weights.items())
        return f"MixturePurchaseModel({parts}; {self.n_draws_} draws)"

    # ------------------------------------------------------------------ draws
    @property
    def n_draws_(self) -> int:
        """Number of draws of the mixture (one chain)."""
        return int(self._draws["component"].size)

    def draws(self) -> dict[str, np.ndarray]:
        """The mixture's draws, arrays of shape (1, S): ``component`` and ``{key}:{param}``."""
        return dict(self._draws)

    def _validate(self, rfm: Any, require_monetary: bool = False) -> Any:
        return self.models[self.keys[0]]._validate(rfm, require_monetary=require_monetary)

    # ------------------------------------------------------------------ dispatch
    def _parts(self, params: Mapping[str, np.ndarray]):
        """``(component index, its model, its rows, its params restricted to those rows)``."""
        comp = np.rint(np.ravel(params["component"])).astype(np.int64)
        for i, key in enumerate(self.keys):
            rows = np.flatnonzero(comp == i)
            if rows.size == 0:
                continue
            prefix = f"{key}:"
            sub = {k[len(prefix):]: np.asarray(v)[rows]
                   for k, v in params.items() if k.startswith(prefix)}  # fmt: skip
            yield i, self.models[key], rows, sub

    def _p_alive_arrays(self, params, h):
        n = np.asarray(h[self.history_columns[0]]).size
        out = np.empty((np.ravel(params["component"]).size, n))
        for _, model, rows, sub in self._parts(params):
            out[rows] = model._p_alive_arrays(sub, h)
        return out

    def _expected_active_arrays(self, params, keys, ends, factors):
        size = (np.ravel(params["component"]).size, np.asarray(keys[self.active_columns[0]]).size)
        discounted, total = np.empty(size), np.empty(size)
        for _, model, rows, sub in self._parts(params):
            d, t = model._expected_active_arrays(sub, keys, ends, factors)
            discounted[rows], total[rows] = d, t
        return discounted, total

    def _active_state(self, rng, params, keys):
        size = (np.ravel(params["component"]).size, np.asarray(keys[self.active_columns[0]]).size)
        comp = np.broadcast_to(np.rint(np.asarray(params["component"])).astype(np.int64), size)
        state: dict[str, np.ndarray] = {"component": np.ascontiguousarray(comp)}
        for i, model, rows, sub in self._parts(params):
            part = model._active_state(rng, sub, keys)
            for name, v in part.items():
                full = f"{self.keys[i]}:{name}"
                v = np.broadcast_to(v, (rows.size, size[1]))
                if full not in state:
                    state[full] = np.zeros(size, dtype=v.dtype)
                state[full][rows] = v
        return state

    def _advance(self, rng, state, dt):
        comp = state["component"]
        counts = np.zeros(comp.shape, dtype=np.int64)
        alive = np.zeros(comp.shape, dtype=bool)
        for i, key in enumerate(self.keys):
            cells = np.flatnonzero(comp == i)
            if cells.size == 0:
                continue
            prefix = f"{key}:"
            sub = {k[len(prefix) :]: v[cells] for k, v in state.items() if k.startswith(prefix)}
            c, a = self.models[key]._advance(rng, sub, dt)
            counts[cells], alive[cells] = c, a
        return counts, alive

    @property
    def _fused_futures(self):
        """The components' compiled futures, row by row, when every component in use has
        them (else None: :func:`clvbayes.predict.outcomes.active_futures` takes the generic
        path)."""
        used = [self.models[k] for k, n in self.n_per_component.items() if n > 0]
        if not all(callable(getattr(m, "_fused_futures", None)) for m in used):
            return None
        return self._dispatch_fused

    def _dispatch_fused(self, seed, params, keys, horizon, period, factors, marks=None,
                        independent=False):  # fmt: skip
        size = (np.ravel(params["component"]).size, np.asarray(keys[self.active_columns[0]]).size)
        out: dict[str, np.ndarray] = {}
        first = True
        for i, model, rows, sub in self._parts(params):
            # the first component in use keeps the seed (a mixture with one component is that
            # model exactly); the others get their own streams
            s = seed if first else int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
            first = False
            m = None
            if marks is not None:
                shape, rate_shape = marks
                m = (np.ravel(shape)[rows], np.asarray(rate_shape)[rows])
            part = model._fused_futures(s, sub, keys, horizon, period, factors, m,
                                        independent=independent)  # fmt: skip
            for name, v in part.items():
                if name not in out:
                    out[name] = np.zeros(size, dtype=np.asarray(v).dtype)
                out[name][rows] = v
        return out
