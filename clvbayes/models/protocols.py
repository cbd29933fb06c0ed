"""The interfaces :func:`clvbayes.predict.score_customers` drives models through.

:class:`PurchaseModel` and :class:`SpendModel` declare, with shapes and units, the methods
:mod:`clvbayes.predict` calls (their names keep the leading underscore of the array layer:
they take plain arrays of posterior draws and distinct histories, not customer tables).  A
model implements a protocol by having these methods; nothing needs to inherit from it.
:func:`missing_methods` says which ones a model lacks and :func:`check_implements` turns that
into a :class:`TypeError` that names them.

The protocols hold only what differs between families.  Composition -- P(alive) times the
future of an active customer, spend marks on purchases, discounting by period, the sharing
of simulated futures across histories, and the memory bound -- lives once, in
:mod:`clvbayes.predict.outcomes`, and works for any pair of models.

Conventions shared by every method:

* ``params``: dict of parameter name to array of shape ``(S, 1)``, ``S`` posterior draws
  (flattened chains x draws, see :func:`clvbayes.predict.joint_draws`);
* ``h``: dict of history column to array of shape ``(n,)``, one entry per distinct history
  (``frequency`` repeat purchases, ``recency`` and ``T`` in the data's time unit and, for a
  spend model, ``monetary_value`` in currency units);
* ``keys``: the same, restricted to the columns the future of an active customer depends
  on (:attr:`PurchaseModel.active_columns` and :attr:`SpendModel.key_columns`), one entry per
  distinct key (``(P,)``); work done per key is shared by every history with that key;
* ``state``: dict of latent-variable name to a flat array, one entry per simulated
  customer (a cell of draws x keys), for the customers still active;
* times, horizons and discount periods are in the time unit of the customer table
  (:func:`clvbayes.units.table_time_unit`; for a discrete-time model, ``"opportunities"``:
  horizons and discount periods are whole numbers of opportunities), money in the currency
  of ``monetary_value``.

Optional accelerators (looked up with ``getattr``, never required): a purchase model may
have ``_fused_futures(seed, params, keys, horizon, period, factors, marks=None,
independent=False)`` and a spend model ``_fused_marks(params, keys)`` -- the same futures as
the generic path, in one compiled pass (BG/NBD family x Gamma-Gamma); keys sorted by
``active_columns`` may share random streams (exact per key, dependent across keys) unless
``independent``, which gives every key, in any order, its own future.  ``tests/test_outcomes.py`` pins each one to
the generic path.

:func:`purchase_models` is the registry of purchase models that implement
:class:`PurchaseModel`, keyed by the short name the CLI and the report use (``bgnbd``,
``mbgnbd``, ``pnbd`` in continuous time; ``bgbb`` on discrete opportunities).  Membership is checked at run time, so a model whose array layer is
unfinished is simply left out (see :func:`purchase_model_candidates` for the reason).
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "PURCHASE_METHODS",
    "SPEND_METHODS",
    "TIME_GRIDS",
    "PurchaseModel",
    "SpendModel",
    "check_implements",
    "missing_methods",
    "purchase_model_candidates",
    "purchase_models",
    "time_grid",
]


@runtime_checkable
class PurchaseModel(Protocol):
    """A fitted continuous-time purchase model, as :func:`~clvbayes.predict.score_customers`
    uses it.

    Attributes
    ----------
    history_columns : tuple of str
        The customer-table columns of a history (``frequency``, ``recency``, ``T`` in
        continuous time; ``frequency``, ``recency``, ``periods`` for discrete opportunities).
    active_columns : tuple of str
        History columns on which the future of a customer *known to be active at T*
        depends (``("frequency", "T")`` for BG/NBD, MBG/NBD and Pareto/NBD: not recency).
    """

    history_columns: ClassVar[tuple[str, ...]]
    active_columns: ClassVar[tuple[str, ...]]

    def draws(self) -> dict[str, np.ndarray]:
        """Posterior draws of each parameter, arrays of shape (chain, draw)."""
        ...

    def _validate(self, rfm: Any, require_monetary: bool = False) -> Any:
        """The customer table checked for this model (one row per customer, same index), or
        :class:`~clvbayes.errors.DataError` naming the column, the rows and the fix."""
        ...

    def _p_alive_arrays(
        self, params: dict[str, np.ndarray], h: dict[str, np.ndarray]
    ) -> np.ndarray:
        """P(customer is still active at ``T``) per draw and history.

        Parameters
        ----------
        params : dict of str to ndarray
            Posterior draws, each ``(S, 1)``.
        h : dict of str to ndarray
            Distinct histories (``frequency``, ``recency``, ``T``), each ``(n,)``.

        Returns
        -------
        ndarray
            Probabilities in [0, 1], shape ``(S, n)``.
        """
        ...

    def _expected_active_arrays(
        self,
        params: dict[str, np.ndarray],
        keys: dict[str, np.ndarray],
        ends: np.ndarray,
        factors: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Expected purchases of a customer active at ``T``, discounted and in total.

        Parameters
        ----------
        params : dict of str to ndarray
            Posterior draws, each ``(S, 1)``.
        keys : dict of str to ndarray
            Distinct :attr:`active_columns` values, each ``(P,)``.
        ends : ndarray
            Ends of the discount periods measured from ``T`` (time unit), ``(K,)``;
            ``ends[-1]`` is the horizon.
        factors : ndarray
            Discount factor of each period (1 = undiscounted), ``(K,)``.

        Returns
        -------
        discounted, total : ndarray
            ``(S, P)``: expected purchases in ``(T, T + ends[-1]]`` with those in period
            ``k`` weighted by ``factors[k - 1]``, and unweighted.
        """
        ...

    def _active_state(
        self, rng: np.random.Generator, params: dict[str, np.ndarray], keys: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Latent variables of customers known to be active at ``T``, from their exact posterior.

        Parameters
        ----------
        rng : numpy.random.Generator
        params : dict of str to ndarray
            Draws, each ``(S, 1)``.
        keys : dict of str to ndarray
            Each ``(P,)`` (distinct keys, or one entry per customer).

        Returns
        -------
        dict of str to ndarray
            Each ``(S, P)``: one independent draw per (draw, key), e.g. the purchase rate
            ``lam`` (per time unit) and the dropout probability ``p``.
        """
        ...

    def _advance(
        self, rng: np.random.Generator, state: dict[str, np.ndarray], dt: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Simulate the next ``dt`` (time unit) of customers active now.

        The model must be Markov in ``state``: given it, the future after ``dt`` does not
        depend on what happened before.

        Parameters
        ----------
        rng : numpy.random.Generator
        state : dict of str to ndarray
            Latent variables of the active customers, flat arrays of one length ``m``.
        dt : float
            Length of the step (> 0, time unit).

        Returns
        -------
        counts : ndarray of int, ``(m,)``
            Purchases in the step.
        alive : ndarray of bool, ``(m,)``
            Still active at the end of the step.
        """
        ...


@runtime_checkable
class SpendModel(Protocol):
    """A fitted spend model, as :func:`~clvbayes.predict.score_customers` uses it.

    A transaction value is ``scale x unit value``: ``scale`` depends on the whole history
    (:meth:`_value_scale_arrays`, currency units), the law of the unit values only on the
    history's :attr:`key_columns` -- so simulated unit values are shared by every history
    with the same key.  (Gamma-Gamma: scale ``gamma + x z-bar``, unit value ``g / G`` with
    ``g ~ Gamma(p)`` per transaction and ``G ~ Gamma(p x + q)`` per customer.)  Histories
    ``h`` carry ``frequency`` and ``monetary_value`` (mean repeat-transaction value, currency).

    Attributes
    ----------
    key_columns : tuple of str
        History columns the law of the unit values depends on (``("frequency",)``).
    """

    key_columns: ClassVar[tuple[str, ...]]

    def draws(self) -> dict[str, np.ndarray]:
        """Posterior draws of each parameter, arrays of shape (chain, draw)."""
        ...

    def _expected_spend_arrays(
        self, params: dict[str, np.ndarray], h: dict[str, np.ndarray]
    ) -> np.ndarray:
        """E[value of one future transaction | history] per draw and history, ``(S, n)``,
        currency units."""
        ...

    def _value_scale_arrays(
        self, params: dict[str, np.ndarray], h: dict[str, np.ndarray]
    ) -> np.ndarray:
        """Currency scale of each history's transaction values per draw, ``(S, n)``."""
        ...

    def _unit_state(
        self, rng: np.random.Generator, params: dict[str, np.ndarray], keys: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Latent spend variables per (draw, key) from their exact posterior, each ``(S, P)``."""
        ...

    def _unit_value_sums(
        self, rng: np.random.Generator, state: dict[str, np.ndarray], counts: np.ndarray
    ) -> np.ndarray:
        """Sum of ``counts[i]`` independent unit values of customer ``i`` (0 where none).

        ``state`` holds flat arrays of one length ``m``; ``counts`` is ``(m,)`` (int);
        returns ``(m,)`` floats (unit scale).
        """
        ...


def _protocol_members(protocol: type) -> tuple[str, ...]:
    own = [k for k, v in vars(protocol).items() if callable(v) and not k.startswith("__")]
    return tuple(getattr(protocol, "__annotations__", {})) + tuple(own)


#: Attributes and methods a purchase model needs, in the order :class:`PurchaseModel` declares them.
PURCHASE_METHODS: tuple[str, ...] = _protocol_members(PurchaseModel)
#: Attributes and methods a spend model needs, in the order :class:`SpendModel` declares them.
SPEND_METHODS: tuple[str, ...] = _protocol_members(SpendModel)
_METHODS = {PurchaseModel: PURCHASE_METHODS, SpendModel: SPEND_METHODS}


def missing_methods(model: Any, protocol: type) -> list[str]:
    """Names of the ``protocol`` members (:class:`PurchaseModel` or :class:`SpendModel`) that
    ``model`` (an instance or a class) lacks; empty when it implements the protocol."""
    annotated = getattr(protocol, "__annotations__", {})
    return [
        m
        for m in _METHODS[protocol]
        if not (hasattr(model, m) if m in annotated else callable(getattr(model, m, None)))
    ]


def check_implements(model: Any, protocol: type, role: str) -> None:
    """Raise :class:`TypeError` naming the missing methods when ``model`` lacks ``protocol``.

    Parameters
    ----------
    model : object
        The model given to :func:`~clvbayes.predict.score_customers`.
    protocol : {PurchaseModel, SpendModel}
    role : str
        The argument name, for the message (``purchase_model`` or ``spend_model``).
    """
    missing = missing_methods(model, protocol)
    if not missing:
        return
    if protocol is PurchaseModel:
        usable = ", ".join(c.__name__ for c in purchase_models(grid=None).values())
        fix = f"pass a fitted purchase model ({usable})"
    else:
        fix = "pass a fitted spend model such as GammaGammaModel"
    raise TypeError(
        f"{role}: {type(model).__name__} does not implement the {protocol.__name__} interface "
        f"that score_customers needs (missing {', '.join(missing)}): {fix}."
    )


# (module, class, time grid) of each purchase model, by its short name
_PURCHASE_CLASSES: dict[str, tuple[str, str, str]] = {
    "bgnbd": ("clvbayes.models.bgnbd", "BetaGeoModel", "continuous"),
    "mbgnbd": ("clvbayes.models.mbgnbd", "ModifiedBetaGeoModel", "continuous"),
    "pnbd": ("clvbayes.models.pnbd", "ParetoNBDModel", "continuous"),
    "bgbb": ("clvbayes.models.bgbb", "BetaGeoBetaBinomModel", "discrete"),
}
#: Time grids of the purchase models: continuous time (``recency``, ``T`` in days or weeks)
#: or discrete opportunities (``recency``, ``periods`` counted in opportunities).
TIME_GRIDS = ("continuous", "discrete")


def time_grid(model: Any) -> str | None:
    """``"continuous"`` or ``"discrete"`` for a registered purchase model (class or instance)."""
    cls = model if isinstance(model, type) else type(model)
    for module, name, grid in _PURCHASE_CLASSES.values():
        if cls.__module__ == module and cls.__name__ == name:
            return grid
    return None


def purchase_model_candidates(
    grid: str | None = "continuous",
) -> dict[str, tuple[type | None, str | None]]:
    """Every known purchase model on ``grid``: ``{key: (class or None, reason or None)}``.

    ``grid`` is ``"continuous"`` (default: BG/NBD, MBG/NBD, Pareto/NBD), ``"discrete"``
    (BG/BB) or ``None`` (all).  ``reason`` says why a model is not usable with
    :func:`~clvbayes.predict.score_customers` (its module does not import, or the
    :class:`PurchaseModel` members it lacks); ``None`` when it implements the protocol.
    """
    if grid is not None and grid not in TIME_GRIDS:
        raise ValueError(f"grid must be one of {TIME_GRIDS} or None, got {grid!r}.")
    out: dict[str, tuple[type | None, str | None]] = {}
    for key, (module, name, model_grid) in _PURCHASE_CLASSES.items():
        if grid is not None and model_grid != grid:
            continue
        try:
            cls = getattr(importlib.import_module(module), name)
        except Exception as err:  # a model module mid-development must not break the others
            out[key] = (None, f"{module}.{name} cannot be imported ({type(err).__name__}: {err})")
            continue
        missing = missing_methods(cls, PurchaseModel)
        reason = (
            f"{name} lacks the PurchaseModel method(s) {', '.join(missing)}" if missing else None
        )
        out[key] = (cls, reason)
    return out


def purchase_models(grid: str | None = "continuous") -> dict[str, type]:
    """The purchase models on ``grid`` that implement :class:`PurchaseModel`, by key.

    Default (continuous time): ``{"bgnbd": BetaGeoModel, "mbgnbd": ModifiedBetaGeoModel,
    "pnbd": ParetoNBDModel}``; ``grid="discrete"``: ``{"bgbb": BetaGeoBetaBinomModel}``;
    ``grid=None``: all of them.  Membership is checked now, not at import.
    """
    return {
        k: cls for k, (cls, reason) in purchase_model_candidates(grid).items() if reason is None
    }
