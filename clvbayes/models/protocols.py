"""The interfaces :func:`clvbayes.predict.score_customers` drives models through.

:class:`PurchaseModel` and :class:`SpendModel` declare, with shapes and units, exactly the
methods :mod:`clvbayes.predict.clv` calls today (their names keep the leading underscore of
the array layer: they take plain arrays of posterior draws and distinct histories, not
customer tables).  A model implements a protocol by having these methods; nothing needs to
inherit from it.  :func:`missing_methods` says which ones a model lacks and
:func:`check_implements` turns that into a :class:`TypeError` that names them.

Conventions shared by every method:

* ``params``: dict of parameter name to array of shape ``(S, 1)``, ``S`` posterior draws
  (flattened chains x draws, see :func:`clvbayes.predict.joint_draws`);
* ``h``: dict of history column to array of shape ``(n,)``, one entry per distinct history
  (``frequency`` repeat purchases, ``recency`` and ``T`` in the data's time unit and, for a
  spend model, ``monetary_value`` in currency units);
* times, horizons and discount periods are in the time unit of the customer table
  (``rfm.attrs["time_unit"]``), money in the currency of the ``monetary_value`` column.

:func:`purchase_models` is the registry of continuous-time purchase models that implement
:class:`PurchaseModel`, keyed by the short name the CLI and the report use (``bgnbd``,
``mbgnbd``, ``pnbd``).  Membership is checked at run time, so a model whose array layer is
unfinished is simply left out (see :func:`purchase_model_candidates` for the reason).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "PURCHASE_METHODS",
    "SPEND_METHODS",
    "PurchaseModel",
    "SpendModel",
    "check_implements",
    "missing_methods",
    "purchase_model_candidates",
    "purchase_models",
]


@runtime_checkable
class PurchaseModel(Protocol):
    """A fitted continuous-time purchase model, as :func:`~clvbayes.predict.score_customers`
    uses it.

    Optional accelerator (looked up with ``getattr``, not part of the protocol):
    ``_simulate_sums_arrays(rng, params, h, horizon, period=1.0, factors=None,
    value_shape=None, value_rate=None) -> (alive, sums)`` -- the same outcomes as
    :meth:`_simulate_arrays` summed inside a compiled loop (``sums`` holds ``purchases``,
    ``value`` and ``discounted``, each ``(S, n)``), so memory does not grow with the number
    of simulated purchases.  Models without it are simulated through :meth:`_simulate_arrays`.
    """

    def draws(self) -> dict[str, np.ndarray]:
        """Posterior draws of each parameter, arrays of shape (chain, draw)."""
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

    def _alive_factors(
        self,
        params: dict[str, np.ndarray],
        h: dict[str, np.ndarray],
        ends: np.ndarray,
        factors: np.ndarray,
    ) -> dict[str, Any]:
        """P(alive) per history and the expectations of an *active* customer per (frequency, T).

        The expected purchases of a customer who is active at ``T`` depend only on
        ``(frequency, T)`` (not on recency), so they are computed once per distinct pair.

        Parameters
        ----------
        params : dict of str to ndarray
            Posterior draws, each ``(S, 1)``.
        h : dict of str to ndarray
            Distinct histories, each ``(n,)``.
        ends : ndarray
            Ends of the discount periods, measured from ``T`` (time unit), shape ``(K,)``;
            ``ends[-1]`` is the horizon.
        factors : ndarray
            Discount factor of each period (1 = undiscounted), shape ``(K,)``.

        Returns
        -------
        dict
            ``p_alive`` ``(S, n)``; ``pair`` ``(n,)`` integer index of each history's pair;
            ``pairs`` dict with ``frequency`` and ``T``, each ``(P,)``; ``total`` ``(S, P)``
            expected purchases in ``(T, T + ends[-1]]`` given active at ``T``; ``discounted``
            ``(S, P)`` the same with purchases in period ``k`` weighted by ``factors[k - 1]``.
        """
        ...

    def _active_futures(
        self,
        seed: int,
        params: dict[str, np.ndarray],
        pairs: dict[str, np.ndarray],
        horizon: float,
        period: float,
        factors: np.ndarray,
        marks: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """One simulated future per (draw, pair) of a customer active at ``T``.

        Parameters
        ----------
        seed : int
            Seed of the simulation (a non-negative 32-bit integer).
        params : dict of str to ndarray
            Draws, each ``(S, 1)`` (one simulated future per row).
        pairs : dict of str to ndarray
            Distinct ``frequency`` and ``T`` (time unit), each ``(P,)``.
        horizon : float
            Length of the future window (time unit).
        period : float
            Discount period (time unit); a purchase at time ``t`` after ``T`` falls in
            period ``ceil(t / period)``.
        factors : ndarray
            Discount factor of each period, ``(K,)``.
        marks : (ndarray, ndarray), optional
            Spend marks from :meth:`SpendModel._value_shapes_arrays`: the transaction-value
            shape ``(S,)`` and the spend-rate posterior shape ``(S, P)``.  With them, values
            are drawn in units of the spend-rate scale (``gamma + x z-bar``).

        Returns
        -------
        dict of str to ndarray
            ``purchases`` ``(S, P)``; with ``marks`` also ``one`` (the value of one
            transaction), ``value`` (sum of the values) and ``discounted`` (discounted sum),
            each ``(S, P)`` in units of the spend-rate scale.
        """
        ...

    def _simulate_arrays(
        self,
        rng: np.random.Generator,
        params: dict[str, np.ndarray],
        h: dict[str, np.ndarray],
        horizon: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each customer's purchase times in ``(T, T + horizon]`` from the exact latent posterior.

        Parameters
        ----------
        rng : numpy.random.Generator
        params : dict of str to ndarray
            Draws, each ``(S, 1)``.
        h : dict of str to ndarray
            Customers' histories, each ``(n,)``.
        horizon : float
            Length of the future window (time unit).

        Returns
        -------
        alive : ndarray of bool, ``(S, n)``
            Active at ``T``.
        counts : ndarray of int, ``(S, n)``
            Purchases in the window.
        times : ndarray of float, ``(counts.sum(),)``
            The purchase times measured from ``T`` (time unit), customer by customer in
            C order of ``counts``.
        """
        ...


@runtime_checkable
class SpendModel(Protocol):
    """A fitted spend model, as :func:`~clvbayes.predict.score_customers` uses it.

    The value of one transaction of a customer with spend rate ``nu`` is drawn with shape
    ``p`` and rate ``nu`` (currency units); ``nu``'s posterior given the history has rate
    ``gamma + x z-bar`` (Gamma-Gamma).  Histories ``h`` carry ``frequency`` and
    ``monetary_value`` (mean repeat-transaction value, currency units).
    """

    def draws(self) -> dict[str, np.ndarray]:
        """Posterior draws of each parameter, arrays of shape (chain, draw)."""
        ...

    def _expected_spend_arrays(
        self, params: dict[str, np.ndarray], h: dict[str, np.ndarray]
    ) -> np.ndarray:
        """E[value of one future transaction | history] per draw and history, ``(S, n)``,
        currency units."""
        ...

    def _value_shapes_arrays(
        self, params: dict[str, np.ndarray], frequency: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Marks for :meth:`PurchaseModel._active_futures`: the value shape ``(S,)`` and the
        spend-rate posterior shape ``(S, P)`` per distinct ``frequency`` ``(P,)``."""
        ...

    def _spend_scale_parts(
        self, params: dict[str, np.ndarray], h: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The spend-rate posterior rate ``gamma + x z-bar`` as its parts: ``(S,)`` and ``(n,)``,
        currency units (values simulated in scale units are multiplied by their sum)."""
        ...

    def _sample_rate_arrays(
        self, rng: np.random.Generator, params: dict[str, np.ndarray], h: dict[str, np.ndarray]
    ) -> np.ndarray:
        """Exact posterior draws of each customer's spend rate ``nu`` (1/currency), ``(S, n)``."""
        ...

    def _simulate_values_arrays(
        self,
        rng: np.random.Generator,
        params: dict[str, np.ndarray],
        nu: np.ndarray,
        counts: np.ndarray,
    ) -> np.ndarray:
        """``counts[s, i]`` transaction values (currency) per (draw, customer) with rate
        ``nu[s, i]``; flat, customer by customer in C order, shape ``(counts.sum(),)``."""
        ...


def _protocol_methods(protocol: type) -> tuple[str, ...]:
    own = [k for k, v in vars(protocol).items() if callable(v) and not k.startswith("__")]
    return tuple(own)


#: Methods a purchase model needs, in the order :class:`PurchaseModel` declares them.
PURCHASE_METHODS: tuple[str, ...] = _protocol_methods(PurchaseModel)
#: Methods a spend model needs, in the order :class:`SpendModel` declares them.
SPEND_METHODS: tuple[str, ...] = _protocol_methods(SpendModel)
_METHODS = {PurchaseModel: PURCHASE_METHODS, SpendModel: SPEND_METHODS}


def missing_methods(model: Any, protocol: type) -> list[str]:
    """Names of the ``protocol`` methods (:class:`PurchaseModel` or :class:`SpendModel`) that
    ``model`` (an instance or a class) lacks; empty when it implements the protocol."""
    return [m for m in _METHODS[protocol] if not callable(getattr(model, m, None))]


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
        usable = ", ".join(c.__name__ for c in purchase_models().values())
        fix = f"pass a fitted continuous-time purchase model ({usable})"
    else:
        fix = "pass a fitted spend model such as GammaGammaModel"
    raise TypeError(
        f"{role}: {type(model).__name__} does not implement the {protocol.__name__} interface "
        f"that score_customers needs (missing {', '.join(missing)}): {fix}."
    )


# (module, class) of each continuous-time purchase model, by its short name
_PURCHASE_CLASSES: dict[str, tuple[str, str]] = {
    "bgnbd": ("clvbayes.models.bgnbd", "BetaGeoModel"),
    "mbgnbd": ("clvbayes.models.mbgnbd", "ModifiedBetaGeoModel"),
    "pnbd": ("clvbayes.models.pnbd", "ParetoNBDModel"),
}


def purchase_model_candidates() -> dict[str, tuple[type | None, str | None]]:
    """Every known continuous-time purchase model: ``{key: (class or None, reason or None)}``.

    ``reason`` says why a model is not usable with :func:`~clvbayes.predict.score_customers`
    (its module does not import, or the :class:`PurchaseModel` methods it lacks); ``None``
    when it implements the protocol.
    """
    out: dict[str, tuple[type | None, str | None]] = {}
    for key, (module, name) in _PURCHASE_CLASSES.items():
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


def purchase_models() -> dict[str, type]:
    """The continuous-time purchase models that implement :class:`PurchaseModel`, by key.

    ``{"bgnbd": BetaGeoModel, "mbgnbd": ModifiedBetaGeoModel}`` plus ``"pnbd":
    ParetoNBDModel`` once it has every protocol method (checked now, not at import).
    """
    return {k: cls for k, (cls, reason) in purchase_model_candidates().items() if reason is None}
