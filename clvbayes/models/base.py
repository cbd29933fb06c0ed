"""Machinery shared by every clvbayes model: priors, fitting, diagnostics, save/load.

A model class (see :mod:`clvbayes.models.bgnbd`) only says which parameters it has,
their default priors, how to turn a customer table into compressed data, and how
to compute the per-history log-likelihood with the array namespace of
:mod:`clvbayes.math._xp`.  Everything else lives here, written once:

* ``fit(method="nuts" | "map" | "mle")`` -- all three produce the same posterior
  structure (``idata_.posterior`` with ``chain`` and ``draw`` dimensions; MAP/MLE
  have one chain and one draw), so downstream code never branches on the method.
* the log-likelihood is evaluated on *compressed* data: one term per distinct
  history, weighted by how many customers share it;
* pointwise log-likelihoods for LOO/WAIC are computed on demand, per distinct
  history with counts, never stored as customers x draws;
* ``save``/``load`` to one netCDF file with settings, priors and (optionally) data.
"""

from __future__ import annotations

import functools
import json
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from scipy import optimize

from clvbayes.data import CompressedRFM
from clvbayes.math._xp import NUMPY
from clvbayes.models.priors import Prior

FORMAT_VERSION = 1
"""Version of the saved-model file layout; bumped when it changes incompatibly."""

NUTS_SAMPLERS = ("pymc", "nutpie", "numpyro")


class NotFittedError(RuntimeError):
    """Raised when a prediction is requested from a model that has not been fitted."""


class ConvergenceWarning(UserWarning):
    """NUTS diagnostics (divergences, r_hat, ESS) suggest the posterior is unreliable."""


class ExcludedCustomersWarning(UserWarning):
    """Some customers carry no information for this model and are left out of its fit."""


def default_nuts_sampler() -> str:
    """The NUTS back-end used when ``nuts_sampler`` is not given.

    Chosen from measurements (``benchmarks/speed.py``): the fastest installed
    back-end by effective samples per second including compilation.  PyMC's own NUTS
    and nutpie (``pip install clvbayes[nutpie]``) were within noise of each other;
    numpyro was 3-5x slower.  Pass ``nuts_sampler="nutpie"`` to use nutpie.
    """
    import importlib.util

    for name in _SAMPLER_PREFERENCE:
        if name == "pymc" or importlib.util.find_spec(name) is not None:
            return name
    return "pymc"


# By ESS per second including compilation on CDNOW (benchmarks/results/speed.md, 2-core
# machine, two runs): pymc 155 and 240 over both models, nutpie 197 and 177, numpyro ~50.
# pymc and nutpie are within measurement noise, so the default is PyMC's own NUTS, which needs
# no extra and makes the default independent of what else is installed.
_SAMPLER_PREFERENCE = ("pymc",)


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
    default_priors: ClassVar[dict[str, Prior]] = {}
    history_columns: ClassVar[tuple[str, ...]] = ()
    _exclusion_reason: ClassVar[str] = ""

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

    def _initial_point(self, data: CompressedRFM) -> dict[str, float]:
        return dict.fromkeys(self.param_names, 1.0)

    def _likelihood_weights(self, data: CompressedRFM) -> np.ndarray:
        """Weight of each distinct history in the likelihood (customers sharing it; 0 = not fitted)."""
        return data.counts

    def _loglik_sum_function(self, data: CompressedRFM):
        """``f(*params) -> (weighted total log-likelihood, gradient)`` in NumPy, or None.

        Models that provide it (prepared once per fit, picklable) get a fast likelihood in
        PyMC's own NUTS; see :meth:`build_pymc_model`.
        """
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
        method : {"nuts", "map", "mle"}
            ``"nuts"``: full posterior by NUTS (``chains`` x ``draws``).
            ``"map"``: posterior mode under the priors (one chain, one draw).
            ``"mle"``: maximum likelihood, i.e. MAP with the priors ignored.
        draws, tune, chains : int
            NUTS settings (ignored by MAP/MLE).
        seed : int, optional
            Random seed; the same seed gives the same draws.
        nuts_sampler : {"pymc", "nutpie", "numpyro"}, optional
            NUTS back-end; default :func:`default_nuts_sampler`.
        **sampler_kwargs
            Passed unchanged to :func:`pymc.sample` (NUTS) or, for MAP/MLE, to
            :func:`scipy.optimize.minimize` as ``options``.

        Returns
        -------
        self
            With ``idata_`` (ArviZ InferenceData), ``data_`` (compressed training
            data), ``time_unit_`` and ``fit_info_`` set.
        """
        data = self._compress(rfm)
        n_excluded = data.n_customers - int(self._likelihood_weights(data).sum())
        if n_excluded:
            warnings.warn(
                f"{type(self).__name__}: {n_excluded} of {data.n_customers} customers are excluded "
                f"from the fit ({self._exclusion_reason}); they still get predictions.",
                ExcludedCustomersWarning,
                stacklevel=2,
            )
        self.data_ = data
        self.time_unit_ = rfm.attrs.get("time_unit")
        t0 = time.perf_counter()
        if method in ("map", "mle"):
            idata, info = self._fit_map(data, use_priors=method == "map", options=sampler_kwargs)
        elif method == "nuts":
            idata, info = self._fit_nuts(
                data, draws=draws, tune=tune, chains=chains, seed=seed,
                nuts_sampler=nuts_sampler, **sampler_kwargs,
            )  # fmt: skip
        else:
            raise ValueError(f"method must be 'nuts', 'map' or 'mle', got {method!r}.")
        info["fit_seconds"] = time.perf_counter() - t0
        n_fitted = int(self._likelihood_weights(data).sum())
        info.update(
            method=method, seed=seed, n_customers=data.n_customers, n_histories=data.n_unique,
            n_customers_fitted=n_fitted, n_customers_excluded=data.n_customers - n_fitted,
        )  # fmt: skip
        self.fit_info_ = info
        idata.attrs.update(self._attrs())
        self.idata_ = idata
        return self

    def _objective(self, data: CompressedRFM, use_priors: bool):
        counts = self._likelihood_weights(data)

        def negative_log_posterior(theta: np.ndarray) -> float:
            values = np.exp(theta)
            params = dict(zip(self.param_names, values, strict=True))
            with np.errstate(all="ignore"):
                total = float(np.sum(counts * self._loglik(params, data)))
                if use_priors:
                    total += sum(float(self.priors[k].logpdf(v)) for k, v in params.items())
            return -total if np.isfinite(total) else 1e300

        return negative_log_posterior

    def _fit_map(self, data: CompressedRFM, use_priors: bool, options: dict):
        f = self._objective(data, use_priors)
        start = np.log([self._initial_point(data)[k] for k in self.param_names])
        # BFGS: for 3-4 parameters its NumPy bookkeeping is ~3x cheaper than L-BFGS-B's
        res = optimize.minimize(
            f, start, jac=lambda th: _central_gradient(f, th), method="BFGS",
            options={"maxiter": 2000, "gtol": 1e-8, **options},
        )  # fmt: skip
        if not res.success and np.max(np.abs(_central_gradient(f, res.x))) > 1e-3:
            warnings.warn(
                f"MAP optimisation did not converge: {res.message}. Try other priors or method='nuts'.",
                ConvergenceWarning,
                stacklevel=3,
            )
        values = np.exp(res.x)
        sd = _laplace_sd(f, res.x)
        posterior = {k: np.array([[v]]) for k, v in zip(self.param_names, values, strict=True)}
        import arviz as az

        idata = az.from_dict(posterior=posterior)
        info = {
            "log_likelihood": -float(self._objective(data, use_priors=False)(res.x)),
            "log_posterior": -float(res.fun),
            "laplace_sd": dict(zip(self.param_names, sd, strict=True)),
            "optimizer_iterations": int(res.nit),
        }
        return idata, info

    def build_pymc_model(self, data: CompressedRFM | None = None, fast: bool = False):
        """The PyMC model: priors plus the log-likelihood of the distinct histories, weighted.

        Parameters
        ----------
        data : CompressedRFM, optional
            Compressed histories (default: the training data).
        fast : bool, default False
            Evaluate the likelihood and its gradient with the model's NumPy function
            (:meth:`_loglik_sum_function`, e.g. :func:`clvbayes.math.bgnbd.loglik_sum_and_grad`)
            wrapped in one PyTensor Op that runs in Python, instead of a symbolic graph with
            one node per history; 3-10x faster gradients on large data.  Only PyMC's own
            NUTS can run it: nutpie and numpyro compile the graph and need ``fast=False``.
            Ignored by models without such a function.
        """
        import pymc as pm

        data = self.data_ if data is None else data
        loglik_sum = self._loglik_sum_function(data) if fast else None
        with pm.Model() as model:
            if loglik_sum is not None:
                params = [self.priors[k].to_pymc(k) for k in self.param_names]
                total, _ = _loglik_op(loglik_sum, len(params))(*params)
                pm.Potential("loglik", total)
            else:
                self._symbolic_loglik(data)
        return model

    def _symbolic_loglik(self, data: CompressedRFM) -> None:
        """Priors and the weighted log-likelihood as a PyTensor graph, in the current PyMC model."""
        import pymc as pm

        from clvbayes.math._xp import pytensor_namespace

        shared = {c: pm.Data(c, np.asarray(data[c], dtype=float)) for c in data.columns}
        counts = pm.Data("counts", self._likelihood_weights(data).astype(float))
        params = {k: self.priors[k].to_pymc(k) for k in self.param_names}
        view = _SharedView(shared, data)
        if "frequency" in data.columns:
            # costly special functions of the frequency alone: once per distinct value
            uniq, index = np.unique(data["frequency"], return_inverse=True)
            view.frequency_unique = pm.Data("frequency_unique", uniq.astype(float))
            view.frequency_index = pm.Data("frequency_index", index.ravel().astype(np.int64))
        ll = self._loglik(params, view, xp=pytensor_namespace())
        pm.Potential("loglik", (counts * ll).sum())

    def _fit_nuts(self, data, *, draws, tune, chains, seed, nuts_sampler, **kwargs):
        import pymc as pm

        sampler = nuts_sampler or default_nuts_sampler()
        if sampler not in NUTS_SAMPLERS:
            raise ValueError(f"nuts_sampler must be one of {NUTS_SAMPLERS}, got {sampler!r}.")
        # PyMC's NUTS can call NumPy code; nutpie and numpyro compile a symbolic graph
        model = self.build_pymc_model(data, fast=sampler == "pymc")
        kwargs.setdefault("cores", min(chains, os.cpu_count() or 1))
        kwargs.setdefault("compute_convergence_checks", False)
        init = {k: v for k, v in self._initial_point(data).items()}
        if sampler == "pymc":
            if "step" not in kwargs and "init" not in kwargs and "initvals" not in kwargs:
                laplace = _laplace_start(model, init, chains, seed)
                if laplace is not None:
                    with model:
                        kwargs["step"] = pm.NUTS(potential=laplace[0])
                    kwargs["initvals"] = laplace[1]
            kwargs.setdefault("initvals", init)
            # dense mass matrix: the CLV posteriors are strongly correlated in log space
            # (Gamma-Gamma: corr(log p, log gamma) ~ -0.97); measured on CDNOW it cuts
            # leapfrog steps per draw from ~28 to ~3 and raises ESS 3-6x
            kwargs.setdefault("init", "jitter+adapt_full")
        elif sampler == "numpyro":
            opts = kwargs.setdefault("nuts_sampler_kwargs", {})
            opts.setdefault("nuts_kwargs", {}).setdefault("dense_mass", True)
            opts.setdefault("chain_method", "vectorized")
        elif sampler == "nutpie":
            kwargs.setdefault("nuts_sampler_kwargs", {}).setdefault(
                "low_rank_modified_mass_matrix", True
            )
        with model:
            idata = pm.sample(
                draws=draws, tune=tune, chains=chains, random_seed=seed,
                nuts_sampler=sampler, **kwargs,
            )  # fmt: skip
        for var in list(idata.posterior.data_vars):
            if var not in self.param_names:
                del idata.posterior[var]
        info = {"nuts_sampler": sampler, "draws": draws, "tune": tune, "chains": chains}
        info.update(check_convergence(idata, self.param_names))
        return idata, info

    # ------------------------------------------------------------------ fitted state
    def _check_fitted(self) -> None:
        if not hasattr(self, "idata_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet: call .fit(rfm) first "
                f"(or {type(self).__name__}.load(path))."
            )

    def draws(self) -> dict[str, np.ndarray]:
        """Posterior draws of each parameter, arrays of shape (chain, draw)."""
        self._check_fitted()
        return {k: self.idata_.posterior[k].values for k in self.param_names}

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
        """Parameter table: mean, sd, equal-tailed interval, r_hat, ESS (bulk, tail)."""
        import arviz as az

        self._check_fitted()
        post = self.idata_.posterior
        rows = {}
        lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
        n_chains, n_draws = post.sizes["chain"], post.sizes["draw"]
        if n_chains > 1 and n_draws > 3:
            sub = post[list(self.param_names)]
            rhat, ess_bulk, ess_tail = (
                az.rhat(sub),
                az.ess(sub, method="bulk"),
                az.ess(sub, method="tail"),
            )
        for k in self.param_names:
            v = post[k].values
            row = {
                "mean": v.mean(),
                "sd": v.std(ddof=1) if v.size > 1 else np.nan,
                f"lower_{prob:g}": np.quantile(v, lo),
                f"upper_{prob:g}": np.quantile(v, hi),
            }
            if n_chains > 1 and n_draws > 3:
                row["r_hat"] = float(rhat[k])
                row["ess_bulk"] = float(ess_bulk[k])
                row["ess_tail"] = float(ess_tail[k])
            else:
                row.update(r_hat=np.nan, ess_bulk=np.nan, ess_tail=np.nan)
                if "laplace_sd" in getattr(self, "fit_info_", {}):
                    row["sd"] = self.fit_info_["laplace_sd"][k]
            rows[k] = row
        return pd.DataFrame(rows).T

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

    def loo(self, rfm: pd.DataFrame | None = None) -> ELPD:
        """PSIS-LOO, computed per distinct history and weighted by customer counts."""
        import arviz as az

        ll = self.log_likelihood(rfm, per="history")
        counts = ll["counts"].values
        if ll.sizes["chain"] * ll.sizes["draw"] < 10:
            raise ValueError("LOO needs posterior draws: fit with method='nuts'.")
        stacked = ll.stack(__sample__=("chain", "draw")).transpose("history", "__sample__").values
        # relative efficiency as arviz.loo computes it: mean ESS of the parameters / draws
        ess = az.ess(self.idata_.posterior[list(self.param_names)], method="mean")
        reff = float(np.mean([ess[v].values for v in self.param_names])) / stacked.shape[1]
        log_w, k = az.psislw(-stacked, reff=reff)
        loo_i = _logsumexp(stacked + log_w, axis=1)
        lppd_i = _logsumexp(stacked, axis=1) - np.log(stacked.shape[1])
        return _weighted_elpd("loo", loo_i, lppd_i - loo_i, counts, max_k=float(np.max(k)))

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
            "time_unit": str(getattr(self, "time_unit_", "")),
            "fit_info": json.dumps(info, default=float),
        }

    def save(self, path: str | os.PathLike, include_data: bool = True) -> None:
        """Save the fitted model (posterior, priors, settings, optionally data) to one netCDF file."""
        import xarray as xr

        self._check_fitted()
        idata = self.idata_.copy()
        for group in ("constant_data",):
            if group in idata.groups():
                del idata[group]
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
            idata.add_groups(constant_data=ds)
        idata.attrs.update(self._attrs())
        idata.to_netcdf(str(path), engine="h5netcdf")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CLVModel:
        """Load a model saved with :meth:`save`; predictions are identical to the original's."""
        import arviz as az

        from clvbayes import models as registry

        idata = az.from_netcdf(str(path), engine="h5netcdf")
        fmt = idata.attrs.get("clvbayes_format")
        fmt = None if fmt is None else int(fmt)
        if fmt != FORMAT_VERSION:
            raise ValueError(
                f"{path}: saved-model format {fmt} (clvbayes {idata.attrs.get('clvbayes_version')}) "
                f"cannot be read by this clvbayes (format {FORMAT_VERSION}). Refit the model, or load it "
                f"with the clvbayes version that wrote it."
            )
        name = idata.attrs["model_class"]
        model_cls = getattr(registry, name, None)
        if model_cls is None or not issubclass(model_cls, cls):
            raise ValueError(f"{path} holds a {name}, not a {cls.__name__}.")
        priors = {k: Prior.from_dict(v) for k, v in json.loads(idata.attrs["priors"]).items()}
        model = model_cls(priors=priors)
        model.time_unit_ = idata.attrs.get("time_unit") or None
        model.fit_info_ = json.loads(idata.attrs.get("fit_info", "{}"))
        model.data_ = None
        if "constant_data" in idata.groups():
            cd = idata.constant_data
            ids = pd.Index(
                cd["customer_id"].values.astype(str), name=cd.attrs.get("customer_id_name")
            )
            dtype = cd.attrs.get("customer_id_dtype", "object")
            if dtype.startswith(("int", "uint")):
                ids = ids.astype(dtype)
            model.data_ = CompressedRFM(
                values={c: cd[c].values for c in model.history_columns},
                counts=cd["counts"].values.astype(np.int64),
                inverse=cd["inverse"].values.astype(np.int64),
                customer_ids=ids,
                columns=model.history_columns,
            )
        for var in list(idata.posterior.data_vars):
            idata.posterior[var] = idata.posterior[var].load()
        model.idata_ = idata
        return model


def _loglik_op(func, n_params: int):
    """One PyTensor Op computing ``func(*params) -> (total, gradient)`` (see :func:`_loglik_op_class`)."""
    return _loglik_op_class()(func, n_params)


@functools.cache
def _loglik_op_class():
    """The Op class, defined on first use so that importing clvbayes does not import PyTensor."""
    import pytensor.tensor as pt
    from pytensor.gradient import DisconnectedType
    from pytensor.graph.basic import Apply
    from pytensor.graph.op import Op

    class LoglikOp(Op):
        """Inputs: the parameter scalars.  Outputs: the log-likelihood and its gradient vector.

        ``perform`` calls ``func`` once for both outputs; the gradient of the first output is
        ``output_grad * gradient`` (no second derivatives).  Pickles by ``(func, n_params)``,
        so ``func`` must pickle (a module-level function with its prepared data).
        """

        def __init__(self, func, n_params: int) -> None:
            self.func = func
            self.n_params = n_params

        def __reduce__(self):
            return _loglik_op, (self.func, self.n_params)

        def make_node(self, *params):
            if len(params) != self.n_params:
                raise TypeError(f"expected {self.n_params} parameters, got {len(params)}")
            inputs = [pt.cast(pt.as_tensor_variable(v), "float64") for v in params]
            if any(v.ndim != 0 for v in inputs):
                raise TypeError("the parameters must be scalars")
            return Apply(self, inputs, [pt.dscalar(), pt.dvector()])

        def perform(self, node, inputs, output_storage):
            total, grad = self.func(*(float(v) for v in inputs))
            output_storage[0][0] = np.asarray(total, dtype=np.float64)
            output_storage[1][0] = np.asarray(grad, dtype=np.float64)

        def infer_shape(self, fgraph, node, input_shapes):
            return [(), (self.n_params,)]

        def L_op(self, inputs, outputs, output_grads):
            g_total, g_grad = output_grads
            if not isinstance(g_grad.type, DisconnectedType):
                raise NotImplementedError("the log-likelihood Op has no second derivatives")
            return [g_total * outputs[1][i] for i in range(self.n_params)]

    return LoglikOp


class _SharedView:
    """Lets ``_loglik`` index PyTensor shared data exactly like a CompressedRFM."""

    def __init__(self, shared: dict, data: CompressedRFM) -> None:
        self._shared = shared
        self.counts = data.counts
        self.frequency_unique = self.frequency_index = None

    def __getitem__(self, name: str):
        return self._shared[name]


def check_convergence(idata, var_names, max_rhat: float = 1.01, min_ess_per_chain: int = 100):
    """Warn (ConvergenceWarning) on divergences, r_hat above ``max_rhat`` or low ESS.

    Returns a dict with the figures (divergences, max r_hat, min bulk/tail ESS).
    """
    import arviz as az

    post = idata.posterior[list(var_names)]
    chains = post.sizes["chain"]
    n_div = int(idata.sample_stats["diverging"].sum()) if "sample_stats" in idata.groups() else 0
    rhat = az.rhat(post).to_array().values.max() if chains > 1 else np.nan
    ess_bulk = az.ess(post, method="bulk").to_array().values.min()
    ess_tail = az.ess(post, method="tail").to_array().values.min()
    problems = []
    if n_div:
        problems.append(f"{n_div} divergent transitions")
    if chains > 1 and rhat > max_rhat:
        problems.append(f"max r_hat {rhat:.3f} > {max_rhat}")
    if min(ess_bulk, ess_tail) < min_ess_per_chain * chains:
        problems.append(
            f"low effective sample size (bulk {ess_bulk:.0f}, tail {ess_tail:.0f}; "
            f"want >= {min_ess_per_chain * chains})"
        )
    if problems:
        warnings.warn(
            "NUTS diagnostics: " + "; ".join(problems) + ". Intervals may be unreliable: "
            "increase tune/draws, raise target_accept, or review the priors.",
            ConvergenceWarning,
            stacklevel=4,
        )
    return {
        "divergences": n_div,
        "max_r_hat": float(rhat),
        "min_ess_bulk": float(ess_bulk),
        "min_ess_tail": float(ess_tail),
    }


def _central_gradient(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def _laplace_start(model, init: dict, chains: int, seed):
    """Dense NUTS mass matrix and chain starts from the Laplace approximation, or None.

    PyMC's default adaptation starts from the identity matrix; with many customers the
    posterior sd in log space is ~1e-3, so early tuning builds maximal trees (1023 leapfrog
    steps) until the matrix has adapted -- most of the fit time at 1M customers.  Here the
    mode is found on the unconstrained space (the gradient is cheap), the covariance is the
    inverse of the Hessian of -log p there (central differences of the gradient), and each
    chain starts at its own draw from that normal approximation.  Adaptation then refines
    the matrix as usual.
    """
    import pymc as pm
    from pymc.blocking import DictToArrayBijection, RaveledVars
    from pymc.step_methods.hmc.quadpotential import QuadPotentialFullAdapt

    try:
        with model:
            start = pm.find_MAP(start=init, progressbar=False, include_transformed=True)
        names = [v.name for v in model.value_vars]
        point = {k: np.asarray(start[k]) for k in names}
        x0 = DictToArrayBijection.map(point)
        dlogp = model.compile_dlogp()

        def grad(x):
            return dlogp(DictToArrayBijection.rmap(RaveledVars(x, x0.point_map_info)))

        n = x0.data.size
        cov = np.linalg.inv(-_fd_hessian(grad, x0.data, 1e-5))
        chol = np.linalg.cholesky(cov)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError):
        return None
    if not np.all(np.isfinite(chol)):
        return None
    rng = np.random.default_rng(seed)
    starts = []
    for _ in range(chains):
        x = x0.data + chol @ rng.standard_normal(n)
        raw = DictToArrayBijection.rmap(RaveledVars(x, x0.point_map_info))
        starts.append(dict(_constrained(model, k, v) for k, v in raw.items()))
    potential = QuadPotentialFullAdapt(n, x0.data, cov, initial_weight=10, rng=rng)
    return potential, starts


def _constrained(model, value_name: str, value) -> tuple[str, np.ndarray]:
    """``("r_log__", log r)`` -> ``("r", r)``: initvals are given on the constrained space."""
    value_var = next(v for v in model.value_vars if v.name == value_name)
    rv = model.values_to_rvs[value_var]
    transform = model.rvs_to_transforms.get(rv)
    if transform is not None:
        value = transform.backward(np.asarray(value)).eval()
    return rv.name, np.asarray(value)


def _fd_hessian(grad, x: np.ndarray, h: float) -> np.ndarray:
    """Symmetrised Hessian from central differences of the gradient function ``grad``."""
    n = x.size
    hess = np.empty((n, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = h
        hess[i] = (grad(x + e) - grad(x - e)) / (2 * h)
    return (hess + hess.T) / 2


def _laplace_sd(f, theta: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Posterior sd of the parameters from the Hessian of -log p in log space (delta method)."""
    n = theta.size
    hess = _fd_hessian(lambda t: _central_gradient(f, t), theta, h)
    try:
        cov = np.linalg.inv(hess)
        var = np.diag(cov)
    except np.linalg.LinAlgError:
        var = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        return np.exp(theta) * np.sqrt(np.where(var > 0, var, np.nan))


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _weighted_elpd(kind, elpd_i, p_i, counts, max_k=float("nan")) -> ELPD:
    n = int(counts.sum())
    total = float(np.sum(counts * elpd_i))
    mean = total / n
    var = float(np.sum(counts * (elpd_i - mean) ** 2) / n)  # ddof=0, as arviz
    return ELPD(
        kind=kind, elpd=total, se=float(np.sqrt(n * var)), p_eff=float(np.sum(counts * p_i)),
        n_customers=n, n_histories=int(counts.size), max_pareto_k=max_k,
    )  # fmt: skip
