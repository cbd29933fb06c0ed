"""Machinery shared by every clvbayes model: priors, fit dispatch, fitted state, save/load.

A model class (see :mod:`clvbayes.models.bgnbd`) only says which parameters it has,
their default priors, how to turn a customer table into compressed data, and how
to compute the per-history log-likelihood with the array namespace of
:mod:`clvbayes.math._xp`.  Inference itself (MAP, Laplace, NUTS set-up, diagnostics)
lives in :mod:`clvbayes.inference` (MAP, Laplace, diagnostics) and :mod:`clvbayes.sampling`
(the PyMC model and NUTS); this module holds what is written once per model:

* ``fit(method="nuts" | "laplace" | "map" | "mle")`` -- all produce the same posterior
  structure (``draws()``: arrays of shape (chain, draw); ``posterior_``: the same as an
  :class:`xarray.Dataset` with ``chain`` and ``draw``
  dimensions; MAP/MLE have one chain and one draw, Laplace one chain of ``draws``), so
  downstream code never branches on the method;
* the log-likelihood is evaluated on *compressed* data: one term per distinct
  history, weighted by how many customers share it;
* pointwise log-likelihoods for LOO/WAIC are computed on demand, per distinct
  history with counts, never stored as customers x draws;
* ``save``/``load`` to one netCDF file with settings, priors and (optionally) data,
  verified on load by a content hash.

``model.idata_`` is the installed ArviZ's container (InferenceData on ArviZ 0.x, DataTree
on 1.x; see :mod:`clvbayes.compat`), built on access.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from clvbayes.data import CompressedRFM
from clvbayes.errors import (
    ConvergenceWarning,
    ExcludedCustomersWarning,
    FitWarning,
    ModelError,
    NotFittedError,
)
from clvbayes.inference import check_convergence
from clvbayes.math._xp import NUMPY
from clvbayes.models.priors import Prior
from clvbayes.sampling import default_nuts_sampler

__all__ = [
    "ELPD",
    "METHODS",
    "CLVModel",
    "ConvergenceWarning",
    "ExcludedCustomersWarning",
    "NotFittedError",
    "check_convergence",
    "default_nuts_sampler",
]

FORMAT_VERSION = 2
"""Version of the saved-model file layout (2: content hash); bumped when it changes."""

METHODS = ("nuts", "laplace", "map", "mle")
"""Fit methods: full posterior, fast approximate posterior, posterior mode, likelihood maximum."""

BOUNDARY_LOG10 = 6.0
"""A fitted parameter whose median is below 1e-6 or above 1e6 is reported as at the boundary."""

FEW_CUSTOMERS = 20
"""Fits on fewer customers than this get a :class:`~clvbayes.errors.FitWarning`."""


@dataclass(frozen=True)
class ELPD:
    """Expected log pointwise predictive density of a fitted model.

    Attributes
    ----------
    kind : str
        ``"loo"`` (PSIS-LOO) or ``"waic"``.
    elpd : float
        Sum over customers of the pointwise ELPD (nats; higher is better).
    se : float
        Standard error of ``elpd``.
    p_eff : float
        Effective number of parameters.
    n_customers, n_histories : int
        Customers, and distinct histories the computation actually ran on.
    max_pareto_k : float
        Largest Pareto k (LOO only; > 0.7 means unreliable), NaN for WAIC.
    """

    kind: str
    elpd: float
    se: float
    p_eff: float
    n_customers: int
    n_histories: int
    max_pareto_k: float = float("nan")

    def to_series(self) -> pd.Series:
        return pd.Series(self.__dict__)


class CLVModel:
    """Base class: prior handling, fit dispatch, fitted checks, diagnostics, save/load.

    Subclasses set ``param_names``, ``default_priors``, ``history_columns`` and
    implement ``_compress`` and ``_loglik``.
    """

    param_names: ClassVar[tuple[str, ...]] = ()
    #: Short name for messages and reports (e.g. "BG/NBD").
    display_name: ClassVar[str] = ""
    default_priors: ClassVar[dict[str, Prior]] = {}
    history_columns: ClassVar[tuple[str, ...]] = ()
    _exclusion_reason: ClassVar[str] = ""
    nuts_defaults: ClassVar[dict[str, Any]] = {}
    preferred_nuts_sampler: ClassVar[str | None] = None
    """A back-end this model samples with unless the caller names one (None: the default)."""
    """NUTS settings this model samples with unless the caller gives them (e.g. target_accept)."""

    def __new__(cls, *args: Any, **kwargs: Any):
        # covariates / pooling: the family's segmented variant (clvbayes.models.segmented)
        structured = any(
            kwargs.get(k) is not None for k in ("covariates", "pooled_by", "reference")
        )
        if structured:
            import inspect

            from clvbayes.models.segmented import SegmentedModel, segmented

            own = "pooled_by" in inspect.signature(cls.__init__).parameters  # pools itself
            if not own and not issubclass(cls, SegmentedModel):
                cls = segmented(cls)
        return super().__new__(cls)

    def __init__(self, priors: dict[str, Prior] | None = None) -> None:
        priors = dict(priors or {})
        unknown = sorted(set(priors) - set(self.param_names))
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown prior name(s) {unknown}. "
                f"Valid names are: {', '.join(self.param_names)}."
            )
        for name, prior in priors.items():
            if not isinstance(prior, Prior):
                raise TypeError(
                    f"Prior for {name!r} must be a clvbayes.Prior, e.g. Prior('HalfNormal', sigma=10); "
                    f"got {type(prior).__name__}."
                )
        self.priors: dict[str, Prior] = {**self.default_priors, **priors}

    def __repr__(self) -> str:
        priors = ", ".join(f"{k}={v!r}" for k, v in self.priors.items())
        return f"{type(self).__name__}({priors})"

    # ------------------------------------------------------------------ hooks
    def _compress(self, rfm: pd.DataFrame) -> CompressedRFM:
        """Validate a customer table and compress it to distinct histories."""
        raise NotImplementedError

    def _loglik(self, params: dict[str, Any], data: CompressedRFM, xp=NUMPY):
        """Log-likelihood of each distinct history (not yet weighted by counts)."""
        raise NotImplementedError

    def _log_prior(self, params: dict[str, float]) -> float:
        """Log prior density at ``params`` (parameter scale): independent priors by default;
        a hierarchical model overrides it with the joint density."""
        return float(sum(float(self.priors[k].logpdf(params[k])) for k in self.param_names))

    def _log_prior_and_grad(self, params: dict[str, float]) -> tuple[float, np.ndarray] | None:
        """:meth:`_log_prior` and its gradient in plain floats (the NUTS hot path), or None
        where a model overrides the prior's density."""
        if type(self)._log_prior is not CLVModel._log_prior:
            return None
        priors = self.priors
        value = 0.0
        grad = np.empty(len(self.param_names))
        for i, k in enumerate(self.param_names):
            value += priors[k].logpdf_scalar(params[k])
            grad[i] = priors[k].logpdf_grad(params[k]) if math.isfinite(value) else 0.0
        return value, grad

    def _pymc_params(self) -> dict[str, Any]:
        """The parameters as PyMC random variables, in the current model context (priors)."""
        return {k: self.priors[k].to_pymc(k) for k in self.param_names}

    def _restore(self, attrs: dict[str, Any]) -> None:
        """Restore instance settings saved by :meth:`_attrs` (hook for models with any)."""

    def _annotate(self, table: pd.DataFrame, source: pd.DataFrame | None = None) -> pd.DataFrame:
        """``table`` with any columns the model derives from customer attributes (covariate
        codes, segments; :mod:`clvbayes.models.segmented`); unchanged for a plain model."""
        return table

    def _initial_point(self, data: CompressedRFM) -> dict[str, float]:
        return dict.fromkeys(self.param_names, 1.0)

    def _likelihood_weights(self, data: CompressedRFM) -> np.ndarray:
        """Weight of each distinct history in the likelihood (customers sharing it; 0 = not fitted)."""
        return data.counts

    def _loglik_sum_function(self, data: CompressedRFM):
        """``f(*params) -> (weighted total log-likelihood, gradient)`` in NumPy, or None.

        Models that provide it (prepared once per fit, picklable) get an exact gradient in
        MAP and Laplace fits and a fast likelihood in PyMC's own NUTS; see
        :meth:`build_pymc_model`.
        """
        return None

    def _information_problem(self, data: CompressedRFM) -> str | None:
        """Why nothing can be learned from ``data`` (a sentence), or None; refused in ``fit``."""
        return None

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        rfm: pd.DataFrame,
        method: str = "nuts",
        *,
        draws: int = 1000,
        tune: int = 1000,
        chains: int = 4,
        seed: int | None = None,
        nuts_sampler: str | None = None,
        **sampler_kwargs: Any,
    ) -> Self:
        """Fit the model to a customer table.

        Parameters
        ----------
        rfm : pandas.DataFrame
            One row per customer, as returned by
            :func:`clvbayes.data.summarize_transactions` (time unit in ``rfm.attrs``).
        method : {"nuts", "laplace", "map", "mle"}
            ``"nuts"``: full posterior by NUTS (``chains`` x ``draws``).
            ``"laplace"``: fast approximate posterior, ``draws`` independent draws of the
            Laplace approximation at the mode in log space (one chain; real credible
            intervals in well under a second; see :func:`clvbayes.inference.fit_laplace`
            for its accuracy and where it breaks down).
            ``"map"``: posterior mode under the priors (one chain, one draw: a point, so
            predictions carry no parameter uncertainty).
            ``"mle"``: maximum likelihood, i.e. MAP with the priors ignored.
        draws, tune, chains : int
            NUTS settings; ``draws`` is also the Laplace sample size.
        seed : int, optional
            Random seed (a non-negative integer); the same seed gives the same draws.
        nuts_sampler : {"pymc", "nutpie", "numpyro"}, optional
            NUTS back-end; default :func:`clvbayes.sampling.default_nuts_sampler`.
        **sampler_kwargs
            Passed unchanged to :func:`pymc.sample` (NUTS) or, for MAP/MLE/Laplace, to
            :func:`scipy.optimize.minimize` as ``options``.

        Returns
        -------
        self
            With ``posterior_`` (xarray Dataset of draws), ``idata_`` (the ArviZ container),
            ``data_`` (compressed training data), ``time_unit_`` and ``fit_info_`` set.

        Raises
        ------
        ModelError
            When the data carry no information for this model (e.g. no customer with a
            repeat purchase), or the Laplace approximation does not exist.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)
                                 or seed < 0):  # fmt: skip
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
        data = self._compress(rfm)
        n_fitted = int(self._likelihood_weights(data).sum())
        problem = self._information_problem(data) if n_fitted else (
            f"none of the {data.n_customers:,} customers can be used ({self._exclusion_reason})"
        )  # fmt: skip
        if problem:
            raise ModelError(
                f"{type(self).__name__} cannot be fitted: {problem}, so nothing can be learned "
                "about its parameters. Use a longer calibration period or more customers."
            )
        n_excluded = data.n_customers - n_fitted
        if n_excluded:
            warnings.warn(
                f"{type(self).__name__}: {n_excluded} of {data.n_customers} customers are excluded "
                f"from the fit ({self._exclusion_reason}); they still get predictions.",
                ExcludedCustomersWarning,
                stacklevel=2,
            )
        from clvbayes import inference

        self.data_ = data
        self.time_unit_ = rfm.attrs.get("time_unit")
        t0 = time.perf_counter()
        stats = None
        if method in ("map", "mle"):
            values, info = inference.fit_map(self, data, use_priors=method == "map",
                                             options=sampler_kwargs)  # fmt: skip
            draws_dict = {k: np.array([[v]]) for k, v in values.items()}
        elif method == "laplace":
            draws_dict, info = inference.fit_laplace(self, data, draws=draws, seed=seed,
                                                     options=sampler_kwargs)  # fmt: skip
        else:
            from clvbayes import sampling

            draws_dict, stats, info = sampling.fit_nuts(
                self, data, draws=draws, tune=tune, chains=chains, seed=seed,
                nuts_sampler=nuts_sampler, **sampler_kwargs,
            )  # fmt: skip
        info["fit_seconds"] = time.perf_counter() - t0
        info.update(
            method=method, seed=seed, n_customers=data.n_customers, n_histories=data.n_unique,
            n_customers_fitted=n_fitted, n_customers_excluded=n_excluded,
        )  # fmt: skip
        # plain arrays: the fast path never imports xarray; posterior_ is built on access
        self._draws = {k: np.asarray(v, dtype=float) for k, v in draws_dict.items()}
        self._posterior = None
        self.sample_stats_ = stats
        self.fit_info_ = info  # the checks may read it (e.g. the Hessian's sd)
        info["warnings"] = self._check_information(n_fitted)
        return self

    def _check_information(self, n_fitted: int) -> list[str]:
        """FitWarnings for fits at the edge of what the data tell; returns the messages."""
        messages = []
        name = type(self).__name__
        if n_fitted < FEW_CUSTOMERS:
            messages.append(
                f"{name} was fitted on {n_fitted} customer(s): the population parameters are barely "
                "identified by so few, so predictions lean on the priors. Fit on more customers."
            )
        for k in self.param_names:
            median = float(np.median(self._draws[k]))
            if median > 0 and abs(np.log10(median)) > BOUNDARY_LOG10:
                messages.append(
                    f"{name}: parameter {k} = {median:.3g} is at the boundary of its support, so "
                    "the data carry too little information about it (predictions that depend on "
                    f"it are unreliable). Give {k} an informative prior (--priors) or use more data."
                )
        for msg in messages:
            warnings.warn(msg, FitWarning, stacklevel=3)
        return messages

    def build_pymc_model(self, data: CompressedRFM | None = None, fast: bool = False):
        """The PyMC model of this model's posterior (see :func:`clvbayes.sampling.pymc_model`)."""
        from clvbayes import sampling

        return sampling.pymc_model(self, self.data_ if data is None else data, fast=fast)

    # ------------------------------------------------------------------ fitted state
    def _check_fitted(self) -> None:
        if getattr(self, "_draws", None) is None:
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet: call .fit(rfm) first "
                f"(or {type(self).__name__}.load(path))."
            )

    @property
    def posterior_(self):
        """Posterior draws as an :class:`xarray.Dataset`, dims (chain, draw), one variable each.

        Assigning a Dataset with those dims replaces the draws.
        """
        from clvbayes import compat

        self._check_fitted()
        if self._posterior is None:
            self._posterior = compat.posterior_from_arrays(self._draws)
        return self._posterior

    @posterior_.setter
    def posterior_(self, ds) -> None:
        missing = [k for k in self.param_names if k not in ds]
        if missing:
            raise ValueError(f"posterior lacks parameter(s) {missing} of {type(self).__name__}.")
        self._draws = {k: np.asarray(ds[k].transpose("chain", "draw").values, dtype=float)
                       for k in self.param_names}  # fmt: skip
        self._posterior = None

    @property
    def idata_(self):
        """The posterior as the installed ArviZ's container (InferenceData or DataTree).

        Built on access (see :meth:`to_arviz`); pass it to ArviZ (``arviz.summary``,
        ``arviz.plot_trace``, ...).  Assigning an InferenceData, a DataTree or a posterior
        Dataset replaces the model's draws.
        """
        return self.to_arviz()

    def to_arviz(self, log_likelihood: bool = False):
        """The fit as the installed ArviZ's container: InferenceData (0.x) or DataTree (1.x).

        Parameters
        ----------
        log_likelihood : bool
            Add a ``log_likelihood`` group (per customer, chain x draw x customer), for
            ``arviz.loo`` / ``arviz.compare``; it materialises customers x draws, so for large
            data prefer :meth:`loo`, computed per distinct history.

        Examples
        --------
        >>> import arviz as az  # doctest: +SKIP
        >>> az.compare({"bgnbd": bg.to_arviz(True), "mbgnbd": mbg.to_arviz(True)})  # doctest: +SKIP
        """
        from clvbayes import compat

        self._check_fitted()
        groups = {
            "posterior": self.posterior_,
            "sample_stats": getattr(self, "sample_stats_", None),
        }
        if log_likelihood:
            groups["log_likelihood"] = self.log_likelihood().to_dataset(name="history")
        return compat.to_arviz(groups, self._attrs())

    @idata_.setter
    def idata_(self, container) -> None:
        from clvbayes import compat

        groups = compat.groups_of(container)
        self.posterior_ = groups["posterior"]
        self.sample_stats_ = groups.get("sample_stats")

    @property
    def n_draws_(self) -> int:
        """Number of posterior draws (chains x draws; 1 for a MAP/MLE fit)."""
        self._check_fitted()
        return int(next(iter(self._draws.values())).size)

    def draws(self) -> dict[str, np.ndarray]:
        """Posterior draws of each parameter, arrays of shape (chain, draw)."""
        self._check_fitted()
        return dict(self._draws)

    def _resolve_data(self, rfm: pd.DataFrame | None) -> CompressedRFM:
        self._check_fitted()
        if rfm is None:
            if getattr(self, "data_", None) is None:
                raise ValueError(
                    "This model was saved without its training data: pass the customer table."
                )
            return self.data_
        return self._compress(rfm)

    def summary(self, prob: float = 0.9) -> pd.DataFrame:
        """Parameter table: mean, sd, equal-tailed interval, r_hat, ESS (bulk, tail).

        A MAP/MLE fit is a point: its interval columns are empty (NaN) and ``sd`` is the
        delta-method sd from the Hessian at the mode.  r_hat and ESS need several chains
        of NUTS draws (a Laplace sample is independent draws: ESS = draws, r_hat empty).
        """
        self._check_fitted()
        return summary_table(
            {k: self._draws[k] for k in self.param_names}, prob,
            point_sd=self.fit_info_.get("laplace_sd", {}),
        )  # fmt: skip

    def identification(self, prob: float = 0.9) -> pd.DataFrame:
        """How much the data, not the prior, tell about each parameter: prior vs posterior
        spread of ``log(theta)``, contraction, interval factor and a ``weak`` flag (see
        :func:`clvbayes.models.identification.identification`)."""
        from clvbayes.models.identification import identification

        return identification(self, prob)

    # ------------------------------------------------------------------ model comparison
    def log_likelihood(self, rfm: pd.DataFrame | None = None, per: str = "customer"):
        """Pointwise log-likelihood, computed on demand from the posterior draws.

        Parameters
        ----------
        rfm : pandas.DataFrame, optional
            Customer table; default the training data.
        per : {"customer", "history"}
            ``"customer"`` returns a (chain, draw, customer) DataArray, ready for
            ``arviz.loo``; this materialises customers x draws, so for large data
            use ``"history"``: a (chain, draw, history) DataArray with a
            ``counts`` coordinate (customers sharing each distinct history).
        """
        import xarray as xr

        if per not in ("customer", "history"):
            raise ValueError(f"per must be 'customer' or 'history', got {per!r}.")
        data = self._resolve_data(rfm)
        weights = self._likelihood_weights(data)
        params = {k: v[..., None] for k, v in self.draws().items()}
        ll = self._loglik(params, data)
        if per == "history":
            keep = weights > 0
            return xr.DataArray(
                ll[..., keep], dims=("chain", "draw", "history"), name="log_likelihood",
                coords={"counts": ("history", weights[keep])},
            )  # fmt: skip
        fitted = weights[data.inverse] > 0
        return xr.DataArray(
            data.expand(ll, axis=-1)[..., fitted], dims=("chain", "draw", "customer"),
            name="log_likelihood", coords={"customer": data.customer_ids.to_numpy()[fitted]},
        )  # fmt: skip

    def loo_terms(self, rfm: pd.DataFrame | None = None, max_elements: int = 4_000_000):
        """PSIS-LOO terms of every distinct history, in chunks of bounded memory.

        Pareto-smoothed importance weights with the relative efficiency of the posterior
        draws (mean ESS / draws, as ``arviz.loo``), computed ``max_elements`` log-likelihood
        values (histories x draws, 8 bytes each) at a time.

        Returns
        -------
        data : CompressedRFM
            The distinct histories (``data.inverse`` maps customers to them).
        elpd_i, p_i, k_i : ndarray, shape (n_histories,)
            LOO log predictive density (nats), effective-parameter term and Pareto k of each
            history; NaN for histories the model does not learn from (weight 0).
        """
        from clvbayes import compat

        data = self._resolve_data(rfm)
        n_samples = self.n_draws_
        if n_samples < 10:
            raise ValueError("LOO needs posterior draws: fit with method='nuts' or 'laplace'.")
        ess = compat.ess(self.posterior_, self.param_names, "mean")
        reff = float(np.mean(list(ess.values()))) / n_samples
        params = {k: v.reshape(-1)[:, None] for k, v in self.draws().items()}
        keep = np.flatnonzero(self._likelihood_weights(data) > 0)
        out = np.full((3, data.n_unique), np.nan)
        step = max(1, max_elements // n_samples)
        for start in range(0, keep.size, step):
            idx = keep[start : start + step]
            view = {c: np.asarray(data[c])[idx] for c in data.columns}
            ll = np.asarray(self._loglik(params, view), dtype=float)
            ll = np.broadcast_to(ll, (n_samples, idx.size)).T  # (histories, samples)
            # a history whose likelihood no draw changes (e.g. a subscriber in her first
            # period) needs no importance weights: its LOO term is that likelihood, exactly
            flat = np.ptp(ll, axis=1) <= 1e-12 * np.maximum(1.0, np.abs(ll[:, 0]))
            out[0, idx[flat]], out[1, idx[flat]], out[2, idx[flat]] = ll[flat, 0], 0.0, 0.0
            if (~flat).any():
                vary = ll[~flat]
                log_w, k = compat.psis_log_weights(-vary, reff)
                loo_i = _logsumexp(vary + log_w, axis=1)
                lppd_i = _logsumexp(vary, axis=1) - np.log(n_samples)
                out[:, idx[~flat]] = loo_i, lppd_i - loo_i, np.asarray(k, dtype=float)
        return data, out[0], out[1], out[2]

    def loo(self, rfm: pd.DataFrame | None = None) -> ELPD:
        """PSIS-LOO, computed per distinct history and weighted by customer counts."""
        data, loo_i, p_i, k_i = self.loo_terms(rfm)
        weights = self._likelihood_weights(data)
        keep = weights > 0
        return _weighted_elpd(
            "loo", loo_i[keep], p_i[keep], weights[keep], max_k=float(np.max(k_i[keep]))
        )

    def waic(self, rfm: pd.DataFrame | None = None) -> ELPD:
        """WAIC, computed per distinct history and weighted by customer counts."""
        ll = self.log_likelihood(rfm, per="history")
        counts = ll["counts"].values
        s = ll.stack(__sample__=("chain", "draw")).transpose("__sample__", "history").values
        lppd_i = _logsumexp(s, axis=0) - np.log(s.shape[0])
        p_i = np.var(s, axis=0)  # ddof=0, as arviz
        return _weighted_elpd("waic", lppd_i - p_i, p_i, counts)

    # ------------------------------------------------------------------ save / load
    def _attrs(self) -> dict[str, Any]:
        from clvbayes import __version__

        info = {k: v for k, v in getattr(self, "fit_info_", {}).items()}
        return {
            "clvbayes_version": __version__,
            "clvbayes_format": FORMAT_VERSION,
            "model_class": type(self).__name__,
            "priors": json.dumps({k: p.to_dict() for k, p in self.priors.items()}),
            "time_unit": str(getattr(self, "time_unit_", "") or ""),
            "fit_info": json.dumps(info, default=_json_default),
        }

    def _file_groups(self, include_data: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        """The netCDF groups and root attributes of a saved model, with the content hash."""
        import xarray as xr

        self._check_fitted()
        groups = {"posterior": self.posterior_.copy()}
        stats = getattr(self, "sample_stats_", None)
        if stats is not None:
            # numeric statistics only: text ones (nutpie's divergence messages) do not survive
            # netCDF as they are, and no prediction or diagnostic reads them
            keep = [v for v in stats.data_vars if stats[v].dtype.kind in "biuf"]
            groups["sample_stats"] = stats[keep]
        if include_data and getattr(self, "data_", None) is not None:
            d = self.data_
            ds = xr.Dataset(
                {c: ("history", np.asarray(d[c])) for c in d.columns}
                | {
                    "counts": ("history", d.counts),
                    "inverse": ("customer", d.inverse),
                    "customer_id": ("customer", d.customer_ids.astype(str).to_numpy(dtype=object)),
                }
            )
            ds.attrs["customer_id_name"] = str(d.customer_ids.name)
            ds.attrs["customer_id_dtype"] = str(d.customer_ids.dtype)
            groups["constant_data"] = ds
        attrs = self._attrs()
        attrs["clvbayes_sha256"] = _content_hash(groups, attrs)
        return groups, attrs

    def to_bytes(self, include_data: bool = True) -> bytes:
        """The saved-model file (see :meth:`save`) as bytes, built in memory."""
        import io

        from clvbayes import compat

        buffer = io.BytesIO()
        compat.write_groups(buffer, *self._file_groups(include_data))
        return buffer.getvalue()

    def save(self, path: str | os.PathLike, include_data: bool = True) -> None:
        """Save the fitted model to one netCDF file (ArviZ's layout, readable by either stack).

        Holds the posterior (and NUTS sample statistics), priors, fit settings and, with
        ``include_data``, the compressed training data with customer ids; a SHA-256 hash
        over all of it is stored and checked by :meth:`load`.  The file is built in memory
        (:meth:`to_bytes`), written to a temporary name beside ``path`` with plain Python
        I/O and renamed into place, so an existing file is replaced only by a complete one:
        a full disk raises :class:`OSError` and leaves it as it was.

        Raises
        ------
        OSError
            When the file cannot be written (the message names the path).
        """
        content = self.to_bytes(include_data)
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> CLVModel:
        """Load a model saved with :meth:`save`; predictions are identical to the original's.

        Loading reads arrays and JSON text only: it never unpickles or executes anything
        from the file.  The content hash is verified, so a file edited after it was saved
        (a parameter, the customer ids or their dtype, the counts) is refused.

        Raises
        ------
        ModelError
            When the file is not a clvbayes model file, was written by an incompatible
            version, fails verification, or holds another model class.
        """
        from clvbayes import compat
        from clvbayes import models as registry

        where = os.fspath(path)
        if not os.path.isfile(where):
            raise ModelError(f"{where}: no such model file.")
        try:
            groups, attrs = compat.read_groups(where)
        except Exception as err:  # h5py/netCDF raise many types for a broken file
            raise ModelError(
                f"{where} is not a readable clvbayes model file ({type(err).__name__}: {err}). "
                "Save the model again with model.save(path)."
            ) from None
        fmt = attrs.get("clvbayes_format")
        try:
            fmt = None if fmt is None else int(fmt)
        except (TypeError, ValueError):
            fmt = None
        if fmt not in (1, FORMAT_VERSION):
            raise ModelError(
                f"{where}: saved-model format {fmt} (clvbayes {attrs.get('clvbayes_version')}) "
                f"cannot be read by this clvbayes (format {FORMAT_VERSION}). Refit the model, or "
                "load it with the clvbayes version that wrote it."
            )
        if fmt == FORMAT_VERSION:
            stored = attrs.pop("clvbayes_sha256", None)
            if stored != _content_hash(groups, attrs):
                raise ModelError(
                    f"{where} was modified after clvbayes saved it (its content hash does not "
                    "match): its posterior, data or settings cannot be trusted. Save the model "
                    "again from its fit."
                )
        else:
            warnings.warn(
                f"{where} was saved by an older clvbayes (format 1) without a content hash, so "
                "it cannot be verified; save it again to get a verified file.",
                FitWarning,
                stacklevel=2,
            )
        try:
            model = _rebuild(cls, registry, groups, attrs, where)
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
            raise ModelError(f"{where} is not a valid clvbayes model file: {err}.") from None
        return model

    # reading the pieces back -------------------------------------------------------------
    def _data_from_file(self, cd, where: str) -> CompressedRFM:
        ids = pd.Index(cd["customer_id"].values.astype(str), name=cd.attrs.get("customer_id_name"))
        dtype = str(cd.attrs.get("customer_id_dtype", "object"))
        if dtype.startswith(("int", "uint")):
            ids = ids.astype(dtype)
        counts = cd["counts"].values
        inverse = cd["inverse"].values
        n_hist = counts.size
        if (counts < 0).any() or (counts != np.round(counts)).any():
            raise ValueError("its history counts are not non-negative whole numbers")
        if inverse.size != ids.size or ((inverse < 0) | (inverse >= n_hist)).any():
            raise ValueError("its customer-to-history index does not match the histories")
        if np.bincount(inverse.astype(np.int64), minlength=n_hist).tolist() != counts.tolist():
            raise ValueError("its history counts do not match the customers")
        columns = tuple(self.history_columns)
        values = {c: cd[c].values for c in columns}
        return CompressedRFM(
            values=values, counts=counts.astype(np.int64), inverse=inverse.astype(np.int64),
            customer_ids=ids, columns=columns,
        )  # fmt: skip


def draws_only(model: CLVModel | None) -> CLVModel | None:
    """A copy of a fitted model holding only its posterior draws (small, cheap to ship to
    another process: a Dask worker, a NUTS worker); ``None`` stays ``None``.

    Raises
    ------
    NotFittedError
        If ``model`` is not fitted.
    """
    if model is None:
        return None
    import copy

    model.draws()  # raises NotFittedError with the usual message
    slim = copy.copy(model)
    slim.data_ = None
    slim.sample_stats_ = None
    # the Dataset setter (both ArviZ stacks): the copy gets its own draws, the model keeps its
    slim.posterior_ = model.posterior_[list(model.param_names)]
    return slim


def summary_table(draws: dict[str, np.ndarray], prob: float = 0.9,
                  point_sd: dict[str, float] | None = None) -> pd.DataFrame:  # fmt: skip
    """The table of :meth:`CLVModel.summary` for draws ``{name: (chain, draw) array}``."""
    from clvbayes import compat

    post = compat.posterior_from_arrays(draws)
    names = list(draws)
    lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
    n_chains, n_draws = post.sizes["chain"], post.sizes["draw"]
    diagnostics = n_chains > 1 and n_draws > 3
    if diagnostics:
        rhat = compat.rhat(post, names)
        ess_bulk = compat.ess(post, names, "bulk")
        ess_tail = compat.ess(post, names, "tail")
    rows = {}
    for k in names:
        v = np.asarray(draws[k], dtype=float)
        point = v.size == 1
        rows[k] = {
            "mean": v.mean(),
            "sd": v.std(ddof=1) if not point else (point_sd or {}).get(k),
            f"lower_{prob:g}": np.nan if point else np.quantile(v, lo),
            f"upper_{prob:g}": np.nan if point else np.quantile(v, hi),
            "r_hat": rhat[k] if diagnostics else np.nan,
            "ess_bulk": ess_bulk[k] if diagnostics else (v.size if not point else np.nan),
            "ess_tail": ess_tail[k] if diagnostics else (v.size if not point else np.nan),
        }
    return pd.DataFrame(rows).T.astype(float)


def _rebuild(cls, registry, groups: dict, attrs: dict, where: str) -> CLVModel:
    name = str(attrs["model_class"])
    model_cls = getattr(registry, name, None)
    if not (isinstance(model_cls, type) and issubclass(model_cls, CLVModel)):
        raise ValueError(f"it names an unknown model class {name!r}")
    if not issubclass(model_cls, cls):
        raise ModelError(f"{where} holds a {name}, not a {cls.__name__}.")
    priors = {k: Prior.from_dict(v) for k, v in json.loads(attrs["priors"]).items()}
    from clvbayes.models.segmented import structure_kwargs

    model = model_cls(priors=priors, **structure_kwargs(attrs))
    model._restore(attrs)
    posterior = groups["posterior"]
    missing = [k for k in model.param_names if k not in posterior]
    if missing:
        raise ValueError(f"its posterior lacks parameter(s) {missing}")
    for k in model.param_names:
        v = posterior[k].values
        if posterior[k].dims != ("chain", "draw") or not np.all(np.isfinite(v)) or (v <= 0).any():
            raise ValueError(f"its draws of {k} are not positive finite (chain, draw) values")
    model.posterior_ = posterior
    model.sample_stats_ = groups.get("sample_stats")
    model.time_unit_ = attrs.get("time_unit") or None
    model.fit_info_ = json.loads(attrs.get("fit_info", "{}"))
    model.data_ = None
    if "constant_data" in groups:
        model.data_ = model._data_from_file(groups["constant_data"], where)
    return model


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _canonical(value):
    """Attribute values as plain Python (netCDF gives numpy scalars back), for hashing."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _content_hash(groups: dict, attrs: dict) -> str:
    """SHA-256 over every group's variables (name, dims, dtype, values), attrs and settings."""
    h = hashlib.sha256()
    for gname in sorted(groups):
        ds = groups[gname]
        h.update(
            f"group:{gname};attrs:{json.dumps({k: _canonical(v) for k, v in ds.attrs.items()}, sort_keys=True, default=str)}".encode()
        )
        for vname in sorted(ds.variables):
            var = ds.variables[vname]
            values = np.asarray(var.values)
            kind = "str" if values.dtype.kind in "OUS" else values.dtype.str
            h.update(f"var:{vname};dims:{var.dims};dtype:{kind};shape:{values.shape}".encode())
            if values.dtype.kind in "OUS":
                h.update("\x1f".join(map(str, values.ravel().tolist())).encode())
            else:
                h.update(np.ascontiguousarray(values).tobytes())
    clean = {k: _canonical(v) for k, v in attrs.items() if k != "clvbayes_sha256"}
    h.update(json.dumps(clean, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _weighted_elpd(kind, elpd_i, p_i, counts, max_k=float("nan")) -> ELPD:
    n = int(counts.sum())
    total = float(np.sum(counts * elpd_i))
    mean = total / n
    # sample variance over customers (n - 1), as the loo R package and ArviZ 1.x
    var = float(np.sum(counts * (elpd_i - mean) ** 2) / max(n - 1, 1))
    return ELPD(
        kind=kind, elpd=total, se=float(np.sqrt(n * var)), p_eff=float(np.sum(counts * p_i)),
        n_customers=n, n_histories=int(counts.size), max_pareto_k=max_k,
    )  # fmt: skip
