"""The one module that knows which ArviZ and PyMC are installed.

clvbayes supports two stacks (see the README):

* PyMC 6 / PyTensor 3 / ArviZ 1.x (``xarray.DataTree`` containers; Python >= 3.12), the
  primary stack;
* PyMC 5 / PyTensor 2 / ArviZ 0.x (``arviz.InferenceData``; Python 3.11).

Inside clvbayes a posterior is always a plain :class:`xarray.Dataset` with dimensions
``(chain, draw)`` (plus ``sample_stats`` as another Dataset where NUTS produced them).
This module turns those into the installed ArviZ's container at the boundary
(:func:`to_arviz`, what users get as ``model.idata_``), takes any container back
(:func:`groups_of`), and wraps the few ArviZ functions clvbayes uses (r_hat, ESS, PSIS
log-weights) so that no other module branches on versions.  Saved models are
read and written with xarray alone (:func:`write_groups`, :func:`read_groups`): the file
layout is ArviZ's (one netCDF group per posterior group, attributes on the root), so a
file written under either stack loads under the other, and under plain ArviZ.

Interval conventions are clvbayes' own (equal-tailed, ``prob=0.9`` by default, computed
with :func:`numpy.quantile`); nothing here reads ArviZ's ``rcParams``, so a change of
ArviZ's defaults (1.x moved to 89 % ETI) cannot move clvbayes' numbers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.metadata import version
from typing import Any

import numpy as np

__all__ = [
    "ARVIZ_MAJOR",
    "PYMC_MAJOR",
    "ess",
    "groups_of",
    "posterior_from_arrays",
    "psis_log_weights",
    "read_groups",
    "rhat",
    "to_arviz",
    "write_groups",
]

ARVIZ_MAJOR = int(version("arviz").split(".")[0])
"""Major version of the installed ArviZ (0: InferenceData; 1: DataTree)."""

PYMC_MAJOR = int(version("pymc").split(".")[0])
"""Major version of the installed PyMC (5 or 6)."""

SAMPLE_DIMS = ("chain", "draw")


def posterior_from_arrays(draws: Mapping[str, np.ndarray]):
    """A posterior Dataset from ``{name: array of shape (chain, draw)}``.

    Scalars and 1-d arrays are read as one chain.
    """
    import xarray as xr

    out = {}
    for name, value in draws.items():
        a = np.asarray(value, dtype=float)
        if a.ndim < 2:
            a = a.reshape(1, -1)
        if a.ndim != 2:
            raise ValueError(
                f"posterior draws of {name!r} must have shape (chain, draw), got {a.shape}."
            )
        out[name] = (SAMPLE_DIMS, a)
    ds = xr.Dataset(out)
    return ds.assign_coords(chain=np.arange(ds.sizes["chain"]), draw=np.arange(ds.sizes["draw"]))


def _as_dataset(node: Any):
    import xarray as xr

    if isinstance(node, xr.Dataset):
        return node
    if hasattr(node, "to_dataset"):  # a DataTree node
        return node.to_dataset()
    raise TypeError(f"expected an xarray Dataset or DataTree node, got {type(node).__name__}")


def groups_of(container: Any) -> dict[str, Any]:
    """``{group name: xarray.Dataset}`` of an InferenceData, a DataTree, or a posterior Dataset."""
    import xarray as xr

    if isinstance(container, xr.Dataset):
        return {"posterior": container}
    if hasattr(container, "children") and hasattr(container, "to_dataset"):  # DataTree
        return {name: _as_dataset(node) for name, node in container.children.items()}
    if hasattr(container, "groups") and callable(container.groups):  # arviz.InferenceData
        return {g.lstrip("/"): getattr(container, g.lstrip("/")) for g in container.groups()}
    raise TypeError(
        "expected an arviz.InferenceData, an xarray.DataTree or an xarray.Dataset of posterior "
        f"draws, got {type(container).__name__}."
    )


def to_arviz(groups: Mapping[str, Any], attrs: Mapping[str, Any] | None = None):
    """The installed ArviZ's container for ``{group: Dataset}``.

    ArviZ 0.x: :class:`arviz.InferenceData`; ArviZ 1.x: :class:`xarray.DataTree`
    (what ``arviz.summary``, ``arviz.plot_trace``, ``arviz.compare`` ... expect).
    """
    attrs = dict(attrs or {})
    groups = {k: v for k, v in groups.items() if v is not None}
    if ARVIZ_MAJOR >= 1:
        import xarray as xr

        tree = xr.DataTree.from_dict({f"/{k}": v for k, v in groups.items()})
        tree.attrs.update(attrs)
        return tree
    import arviz as az

    idata = az.InferenceData(**groups)
    idata.attrs.update(attrs)  # type: ignore[attr-defined]
    return idata


def rhat(posterior, var_names: Sequence[str]) -> dict[str, float]:
    """Rank-normalised split r_hat per scalar variable (Vehtari et al. 2021), the same on
    both ArviZ stacks (:func:`clvbayes.diagnostics.rhat`)."""
    from clvbayes import diagnostics

    return {k: diagnostics.rhat(_chain_draw(posterior, k)) for k in var_names}


def ess(posterior, var_names: Sequence[str], method: str = "bulk") -> dict[str, float]:
    """Effective sample size per scalar variable (``method``: "bulk", "tail" or "mean"),
    the same on both ArviZ stacks (:func:`clvbayes.diagnostics.ess`)."""
    from clvbayes import diagnostics

    return {k: diagnostics.ess(_chain_draw(posterior, k), method) for k in var_names}


def _chain_draw(posterior, name: str) -> np.ndarray:
    da = posterior[name]
    if set(da.dims) != {"chain", "draw"}:
        raise ValueError(f"{name!r} has dims {da.dims}; diagnostics need a scalar (chain, draw).")
    return da.transpose("chain", "draw").values


def psis_log_weights(log_ratios: np.ndarray, reff: float) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed importance log-weights, normalised, and Pareto k per row.

    Parameters
    ----------
    log_ratios : ndarray, shape (n, S)
        Log importance ratios (for LOO: minus the pointwise log-likelihood), one row per
        observation, ``S`` draws.
    reff : float
        Relative efficiency of the draws (mean ESS / S).

    Returns
    -------
    log_w : ndarray, shape (n, S)
    k : ndarray, shape (n,)
        ``inf`` for a row whose largest ratios are all equal (repeated draws, e.g. a chain
        that stood still): no Pareto tail can be fitted, so its weights are the raw
        normalised ratios and the infinite k marks the estimate as unreliable.
    """
    log_ratios = np.asarray(log_ratios, dtype=float)
    try:
        return _psis(log_ratios, reff)
    except ValueError:  # ArviZ 1.x refuses a constant tail ("All tail values are the same")
        pass
    log_w = log_ratios - _logsumexp_rows(log_ratios)[:, None]
    k = np.full(log_ratios.shape[0], np.inf)
    for i, row in enumerate(log_ratios):
        try:
            w_i, k_i = _psis(row[None, :], reff)
        except ValueError:
            continue
        log_w[i], k[i] = w_i[0], k_i.reshape(-1)[0]
    return log_w, k


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=1)
    return m + np.log(np.sum(np.exp(x - m[:, None]), axis=1))


def _psis(log_ratios: np.ndarray, reff: float) -> tuple[np.ndarray, np.ndarray]:
    if ARVIZ_MAJOR >= 1:
        import arviz_stats  # noqa: F401  (registers the .azstats accessor)
        import xarray as xr

        # ArviZ 1.x's psislw takes the log-likelihood and negates it itself (0.x: the ratios)
        da = xr.DataArray(-log_ratios, dims=("obs", "__sample__"))
        log_w, k = da.azstats.psislw(dim="__sample__", r_eff=reff)
        return log_w.transpose("obs", "__sample__").values, np.asarray(k.values)
    import arviz as az

    log_w, k = az.psislw(log_ratios, reff=reff)
    return np.asarray(log_w), np.asarray(k)


# --------------------------------------------------------------------------- netCDF files
ENGINE = "h5netcdf"


def write_groups(target, groups: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
    """Write ``{group: Dataset}`` and root ``attrs`` as one netCDF file (ArviZ's layout).

    ``target`` is a path or a binary file object (e.g. :class:`io.BytesIO`).
    The file is opened once and each group is written through xarray's h5netcdf store
    (:meth:`xarray.Dataset.dump_to_store`, the encoding :meth:`~xarray.Dataset.to_netcdf`
    uses): ``to_netcdf`` reopens the file per group and asks dask, when installed, which
    scheduler runs, importing ``dask.distributed`` (~0.45 s) for in-memory data.
    """
    import xarray as xr
    from xarray.backends import H5NetCDFStore

    if isinstance(target, str | os.PathLike):
        target = os.fspath(target)
    with _h5netcdf().File(target, "w") as root:
        xr.Dataset(attrs=dict(attrs)).dump_to_store(H5NetCDFStore(root, mode="a"))
        for name, ds in groups.items():
            if ds is not None:
                ds.dump_to_store(H5NetCDFStore(root, group=name, mode="a"))


def read_groups(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a file written by :func:`write_groups` (or ArviZ): ``({group: Dataset}, attrs)``.

    Everything is loaded into memory and the file is closed before returning.
    """
    import xarray as xr

    path = os.fspath(path)
    names = _group_names(path)
    with xr.open_dataset(path, engine=ENGINE) as root:
        attrs = dict(root.attrs)
    groups = {}
    for name in names:
        with xr.open_dataset(path, group=name, engine=ENGINE) as ds:
            groups[name] = ds.load()
    return groups, attrs


def _group_names(path: str) -> list[str]:
    h5netcdf = _h5netcdf()
    with h5netcdf.File(path, "r") as f:
        return list(f.groups)


@cache
def _h5netcdf():
    import h5netcdf

    return h5netcdf


# --------------------------------------------------------------------------- sampling
def sample_nuts(model, **kwargs) -> dict[str, Any]:
    """Run :func:`pymc.sample` in ``model``; returns ``{group: Dataset}`` whichever PyMC runs.

    Options for an external sampler (nutpie, numpyro) come as PyMC 5's
    ``nuts_sampler_kwargs``; PyMC 6 takes them as ``nuts={...}``.
    """
    import pymc as pm

    if PYMC_MAJOR >= 6 and "nuts_sampler_kwargs" in kwargs:
        kwargs["nuts"] = {**kwargs.pop("nuts_sampler_kwargs"), **kwargs.get("nuts", {})}

    with model:
        result = pm.sample(**kwargs)
    return groups_of(result)
