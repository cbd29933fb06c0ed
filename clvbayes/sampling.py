"""NUTS: the PyMC model of a clvbayes model, the choice of back-end and its settings.

Lifted out of the model base class: :meth:`clvbayes.models.base.CLVModel.fit` calls
:func:`fit_nuts`, and :meth:`~clvbayes.models.base.CLVModel.build_pymc_model` is
:func:`pymc_model`.  A model contributes only its priors, its per-history log-likelihood
(``_loglik`` with an array namespace), optionally a NumPy log-likelihood sum with its exact
gradient (``_loglik_sum_function``, run by PyMC's NUTS through one PyTensor Op), and optionally
``_symbolic_terms(data, pm)``: extra data the symbolic graph shares across histories (the
BG/NBD family computes its frequency-only special functions once per distinct frequency).
MAP, Laplace and the convergence checks are in :mod:`clvbayes.inference`.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from clvbayes.data import CompressedRFM
from clvbayes.inference import check_convergence

__all__ = ["NUTS_SAMPLERS", "default_nuts_sampler", "distinct_values", "fit_nuts", "pymc_model"]

NUTS_SAMPLERS = ("clvbayes", "pymc", "nutpie", "numpyro")

# options of pymc.NUTS that pymc.sample passes to the step it builds
_NUTS_STEP_OPTIONS = ("target_accept", "max_treedepth", "step_scale", "early_max_treedepth")


OWN_NUTS_OPTIONS = ("target_accept", "max_treedepth", "cores", "progressbar",
                    "compute_convergence_checks")  # fmt: skip
"""Options ``fit(method="nuts")`` takes with clvbayes' own NUTS (the last two are accepted
and ignored: no progress bar is drawn and the checks always run)."""


def default_nuts_sampler() -> str:
    """The NUTS back-end used when ``nuts_sampler`` is not given: clvbayes' own NUTS.

    :mod:`clvbayes.nuts` drives the model's exact-gradient NumPy likelihood on the
    compressed histories directly (no PyMC import, no PyTensor compilation, chains in this
    process and ``cores - 1`` children), starting from the Laplace approximation's
    covariance as a dense metric.  Measured on the PyMC 6.4 stack, 2-core machine, CDNOW
    sample, 4 chains x 1,000 draws after 1,000 tuning steps, idle machine: BG/NBD 3.8 s and
    Gamma-Gamma 2.0 s in a fresh process, 3.5 s and 1.3 s inside ``clvbayes run`` (workers
    started early), against 20-30 s each with PyMC's NUTS on the same likelihood
    (``nuts_sampler="pymc"``; ``python benchmarks/nuts_families.py --samplers
    clvbayes,pymc``), with the same posterior
    (``tests/test_nuts.py::test_cdnow_posterior_matches_pymc``).

    The other back-ends stay available: ``"pymc"`` (PyMC's NUTS on the same NumPy
    likelihood, Laplace-started, dense mass matrix adaptation), ``"nutpie"`` (``pip
    install clvbayes[nutpie]``; it compiles the symbolic graph and failed to adapt on the
    full CDNOW cohort: r_hat 1.59 after 300 + 300) and ``"numpyro"`` (3-5x slower than
    PyMC's).  A model without an exact gradient (a segmented model with more than
    ``MAX_EXACT_CELLS`` cells), or whose Laplace approximation does not exist, is sampled
    by PyMC's NUTS; ``fit_info_["nuts_sampler"]`` says which ran, and
    ``fit_info_["nuts_fallback"]`` why.
    """
    return "clvbayes"


def pymc_model(model: Any, data: CompressedRFM, fast: bool = False):
    """The PyMC model: priors plus the log-likelihood of the distinct histories, weighted.

    Parameters
    ----------
    model : CLVModel
        Supplies the priors and the likelihood.
    data : CompressedRFM
        Compressed histories.
    fast : bool, default False
        Evaluate the likelihood and its gradient with the model's NumPy function
        (``_loglik_sum_function``, e.g. :func:`clvbayes.math.bgnbd.loglik_sum_and_grad`)
        wrapped in one PyTensor Op that runs in Python, instead of a symbolic graph with
        one node per history; 3-10x faster gradients on large data.  Only PyMC's own
        NUTS can run it: nutpie and numpyro compile the graph and need ``fast=False``.
        Ignored by models without such a function.

    Returns
    -------
    pymc.Model
    """
    import pymc as pm

    loglik_sum = model._loglik_sum_function(data) if fast else None
    with pm.Model() as pm_model:
        if loglik_sum is not None:
            rvs = model._pymc_params()
            params = [rvs[k] for k in model.param_names]
            total, _ = _loglik_op(loglik_sum, len(params))(*params)
            pm.Potential("loglik", total)
        else:
            _symbolic_loglik(model, data)
    return pm_model


def _symbolic_loglik(model: Any, data: CompressedRFM) -> None:
    """Priors and the weighted log-likelihood as a PyTensor graph, in the current PyMC model."""
    import pymc as pm

    from clvbayes.math._xp import pytensor_namespace

    shared = {c: pm.Data(c, np.asarray(data[c], dtype=float)) for c in data.columns}
    counts = pm.Data("counts", model._likelihood_weights(data).astype(float))
    params = model._pymc_params()
    view = _SharedView(shared, data)
    terms = getattr(model, "_symbolic_terms", None)
    if terms is not None:
        view.terms = terms(data, pm)
    ll = model._loglik(params, view, xp=pytensor_namespace())
    pm.Potential("loglik", (counts * ll).sum())


def distinct_values(data: CompressedRFM, column: str, pm: Any) -> tuple[Any, Any]:
    """``(unique values, index of each history's value)`` of ``column`` as PyMC data.

    For a model's ``_symbolic_terms``: costly special functions of one column alone (e.g. of
    the frequency) are then evaluated once per distinct value in the graph.
    """
    uniq, index = np.unique(np.asarray(data[column], dtype=float), return_inverse=True)
    return (
        pm.Data(f"{column}_unique", uniq),
        pm.Data(f"{column}_index", index.ravel().astype(np.int64)),
    )


def fit_nuts(model: Any, data: CompressedRFM, *, draws: int, tune: int, chains: int,
             seed: int | None, nuts_sampler: str | None, **kwargs: Any):  # fmt: skip
    """Sample ``model``'s posterior on ``data`` with NUTS.

    The back-end is ``nuts_sampler``, else the model's ``preferred_nuts_sampler``, else
    :func:`default_nuts_sampler`.  The model's ``nuts_defaults`` (e.g. ``target_accept``)
    apply unless given.  PyMC's NUTS runs the exact-gradient NumPy likelihood when the model
    has one, starts from the Laplace approximation (:func:`clvbayes.inference.nuts_start`)
    and adapts a dense mass matrix; nutpie uses its low-rank mass matrix, numpyro a dense one.

    Returns
    -------
    draws : dict of str to ndarray
        ``(chain, draw)`` per parameter.
    sample_stats : xarray.Dataset or None
    info : dict
        Back-end, settings, and :func:`clvbayes.inference.check_convergence`'s diagnostics.
    """
    from clvbayes import compat, inference

    sampler = nuts_sampler or model.preferred_nuts_sampler or default_nuts_sampler()
    if sampler not in NUTS_SAMPLERS:
        raise ValueError(f"nuts_sampler must be one of {NUTS_SAMPLERS}, got {sampler!r}.")
    fallback = None
    if sampler == "clvbayes":
        result = _fit_own_nuts(model, data, draws=draws, tune=tune, chains=chains, seed=seed,
                               **kwargs)  # fmt: skip
        if not isinstance(result, str):
            return result
        fallback, sampler = result, "pymc"
    # PyMC's NUTS can call NumPy code; nutpie and numpyro compile a symbolic graph
    pm_model = pymc_model(model, data, fast=sampler == "pymc")
    kwargs.setdefault("cores", min(chains, os.cpu_count() or 1))
    kwargs.setdefault("compute_convergence_checks", False)
    init = dict(model._initial_point(data))
    for key, value in model.nuts_defaults.items():
        if key not in kwargs and key not in kwargs.get("nuts", {}):
            kwargs[key] = value
    if sampler == "pymc":
        if "step" not in kwargs and "init" not in kwargs and "initvals" not in kwargs:
            # options of the NUTS step itself must reach the step we build here (PyMC
            # applies them only to a step it builds)
            step_kw = {**kwargs.get("nuts", {})}
            step_kw.update({k: kwargs[k] for k in _NUTS_STEP_OPTIONS if k in kwargs})
            start = inference.nuts_start(model, data, pm_model, chains, seed, **step_kw)
            if start is not None:
                for k in _NUTS_STEP_OPTIONS:
                    kwargs.pop(k, None)
                kwargs.pop("nuts", None)
                kwargs["step"], kwargs["initvals"] = start
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
    groups = compat.sample_nuts(
        pm_model, draws=draws, tune=tune, chains=chains, random_seed=seed,
        nuts_sampler=sampler, **kwargs,
    )  # fmt: skip
    posterior = groups["posterior"]
    draws_dict = {k: posterior[k].values for k in model.param_names}
    stats = groups.get("sample_stats")
    info = {"nuts_sampler": sampler, "draws": draws, "tune": tune, "chains": chains}
    if fallback:
        info["nuts_fallback"] = fallback
    info.update(check_convergence(posterior, stats, model.param_names))
    return draws_dict, stats, info


def _fit_own_nuts(model: Any, data: CompressedRFM, *, draws: int, tune: int, chains: int,
                  seed: int | None, **kwargs: Any):  # fmt: skip
    """:func:`fit_nuts` with :mod:`clvbayes.nuts`; returns its triple, or a sentence saying
    why this model needs PyMC's NUTS instead."""
    from clvbayes import compat, inference, nuts
    from clvbayes.errors import ModelError

    unknown = sorted(set(kwargs) - set(OWN_NUTS_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown NUTS option(s) {unknown}: clvbayes' own NUTS takes "
            f"{', '.join(OWN_NUTS_OPTIONS[:3])}. Options of pymc.sample need "
            "nuts_sampler='pymc'."
        )
    options = {**model.nuts_defaults, **kwargs}
    f = inference.log_density(model, data, use_priors=True, jacobian=True)
    if f.exact is None:
        return "the model has no exact gradient of its likelihood here"
    try:
        approx = inference.laplace_approximation(model, data)
    except ModelError:
        return "the Laplace approximation, NUTS' starting metric, does not exist here"
    start_seed, nuts_seed = np.random.SeedSequence(seed).spawn(2)
    starts = [approx.sample(1, np.random.default_rng(s)) for s in start_seed.spawn(chains)]
    starts = np.log([[d[k][0, 0] for k in approx.names] for d in starts])
    cores = int(options.get("cores", min(chains, os.cpu_count() or 1)))
    result = nuts.sample(
        f, starts, approx.cov, draws=draws, tune=tune, seed=nuts_seed, cores=cores,
        target_accept=float(options.get("target_accept", 0.8)),
        max_treedepth=int(options.get("max_treedepth", 10)),
    )  # fmt: skip
    draws_dict = {k: np.exp(result.theta[:, :, i]) for i, k in enumerate(approx.names)}
    stats = _stats_dataset(result.stats)
    info = {
        "nuts_sampler": "clvbayes", "draws": draws, "tune": tune, "chains": chains,
        "target_accept": float(options.get("target_accept", 0.8)),
        "step_size": [float(e) for e in result.step_size],
        "n_gradients": result.n_gradients, "sampling_seconds": result.seconds,
        "cores": cores,
    }  # fmt: skip
    posterior = compat.posterior_from_arrays(draws_dict)
    info.update(check_convergence(posterior, stats, model.param_names))
    return draws_dict, stats, info


def _stats_dataset(stats: dict[str, np.ndarray]):
    """ArviZ-style ``sample_stats`` Dataset (chain, draw) from :class:`clvbayes.nuts.NutsResult`."""
    import xarray as xr

    kinds = {"diverging": bool, "tree_depth": np.int64, "n_steps": np.int64}
    ds = xr.Dataset({k: (("chain", "draw"), np.asarray(v).astype(kinds.get(k, float)))
                     for k, v in stats.items()})  # fmt: skip
    return ds.assign_coords(chain=np.arange(ds.sizes["chain"]), draw=np.arange(ds.sizes["draw"]))


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

        def L_op(self, inputs, outputs, output_grads):
            g_total, g_grad = output_grads
            if not isinstance(g_grad.type, DisconnectedType):
                raise NotImplementedError("the log-likelihood Op has no second derivatives")
            return [g_total * outputs[1][i] for i in range(self.n_params)]

    return LoglikOp


class _SharedView:
    """Lets ``_loglik`` index PyTensor shared data exactly like a CompressedRFM.

    ``terms`` holds what the model's ``_symbolic_terms`` returned (None without it).
    """

    def __init__(self, shared: dict, data: CompressedRFM) -> None:
        self._shared = shared
        self.counts = data.counts
        self.terms = None

    def __getitem__(self, name: str):
        return self._shared[name]
