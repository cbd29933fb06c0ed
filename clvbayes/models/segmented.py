"""Static covariates and partial pooling across segments, for every model family.

``Model(covariates=[...], pooled_by=...)`` (any of :class:`~clvbayes.models.BetaGeoModel`,
:class:`~clvbayes.models.ModifiedBetaGeoModel`, :class:`~clvbayes.models.ParetoNBDModel`,
:class:`~clvbayes.models.BetaGeoBetaBinomModel`, :class:`~clvbayes.models.GammaGammaModel`,
:class:`~clvbayes.models.ShiftedBetaGeometricModel`,
:class:`~clvbayes.models.BetaDiscreteWeibullModel`) returns that family with

* **static covariates** (one value per customer, columns of the customer table): a
  covariate shifts one scale parameter of each of the family's processes,
  ``theta_i = theta_0 exp(sign gamma' z_i)`` (:data:`LINKS`).  The sign is chosen so that
  **a positive coefficient raises the rate** of its process (purchase rate, dropout or
  churn probability, spend): the convention of CLVTools and of Fader & Hardie's note 019,
  ``alpha_i = alpha_0 exp(-gamma_trans' z_i)`` for the purchase scale of BG/NBD and
  Pareto/NBD, ``beta_i = beta_0 exp(-gamma_life' z_i)`` for Pareto/NBD's dropout scale;

  ======================  ===============================  ==================================
  family                  process: parameter (sign)        effect of a positive coefficient
  ======================  ===============================  ==================================
  BG/NBD, MBG/NBD         purchase: alpha (-), dropout:    more purchases; higher mean dropout
                          b (-)                            probability a / (a + b)
  Pareto/NBD              purchase: alpha (-), dropout:    more purchases; faster dropout
                          beta (-)
  BG/BB                   purchase: beta (-), dropout:     higher purchase probability
                          delta (-)                        alpha / (alpha + beta); more dropout
  Gamma-Gamma             spend: gamma (+)                 higher spend per transaction (the
                                                           scale of the spend rate nu)
  sBG, BdW                churn: beta (-)                  higher churn probability
  ======================  ===============================  ==================================

  Numeric covariates are standardised internally (mean 0, sd 1 over the training
  customers); text, categorical and boolean ones are one-hot coded against a reference
  level (the first in sorted order, or the one given in ``reference``).  Each coefficient's
  prior is Normal(0, 1) on the standardised scale (a factor e^2 ~ 7 per sd or per level at
  two prior sd: weakly informative).  :meth:`~SegmentedModel.summary` reports coefficients
  on the **original** scale (per unit of a numeric covariate, per level against the
  reference) and base parameters at the reference (numeric covariates at 0);
* **partial pooling across a segment column** (``pooled_by``: country, channel, cohort):
  each process's rate differs by segment through a segment multiplier drawn from a
  distribution shared by the segments -- the same link as a covariate, with a hierarchical
  prior in place of a fixed coefficient (a random effect, bambi's ``(1 | segment)``)::

      theta_s = theta_0 u_s^sign,   u_s ~ Gamma(k, rate k)  (mean 1),   k = 1 + kappa,
      kappa ~ Gamma(2, 0.2)

  so a small segment's rate shrinks towards the whole base and a large one speaks for
  itself; ``k`` (``<process>_pooling`` is ``kappa``) measures how alike the segments are
  (cv ``1 / sqrt(k)``; ``k >= 1`` keeps the density of ``u`` bounded, so MAP cannot collapse a
  segment to 0).  The family's shape parameters (BG/NBD's ``r`` and ``a``, ...) are shared:
  pooling every parameter separately shrank ``r`` and ``alpha`` towards separate means and
  broke their likelihood ridge, which made small segments' purchase rates worse than
  separate fits when it was tried; with shared shapes the pooled segment estimates beat
  separate fits on small simulated segments (``tests/test_segmented.py``).  Covariate
  effects are shared.

Both are combinations of **cells**: customers with the same segment and covariate values
share one parameter set.  Histories are compressed within each cell, the likelihood is the
family's own exact weighted log-likelihood and gradient per cell (chain rule to the
segment parameters and the coefficients), and predictions run the family's protocol
methods cell by cell, so :func:`clvbayes.predict.score_customers` and every per-customer
method work unchanged.  Cost: one likelihood call per cell and gradient (about 10-50 us
each), so categorical covariates and segments (a few to a few hundred cells) cost little;
a continuous covariate makes every distinct value its own cell, i.e. one term per customer
(measured in ``benchmarks/covariates.py``).

Internally a coefficient is held as its multiplier ``exp(gamma)`` (named
``<process>_effect_<j>``, prior LogNormal(0, 1)), so that the fit machinery, which works on
the logarithm of positive parameters, samples ``gamma`` itself.  Segment multipliers are
``<process>_segment_<i>`` in the sorted order of the segments (``groups_``).

Predictions for customers not seen in training work: their covariates give their cell; a
segment not seen in training is predicted from the population distribution of the
segments (with a :class:`~clvbayes.data.DataWarning`).  :meth:`SegmentedModel.profile`
returns the plain family model of one covariate profile (e.g. for
``expected_purchases_new``).
"""

from __future__ import annotations

import functools
import inspect
import json
import warnings
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import special

from clvbayes.data import CompressedRFM, compress
from clvbayes.data.validation import DataError, DataWarning
from clvbayes.errors import ModelError
from clvbayes.math._xp import NUMPY
from clvbayes.models.priors import Prior

__all__ = ["COEFFICIENT_PRIOR", "LINKS", "SHAPE_PRIOR", "SegmentedModel", "links_of", "segmented"]

COEFFICIENT_PRIOR = Prior("LogNormal", mu=0.0, sigma=1.0)
"""Prior of a coefficient's multiplier exp(gamma): gamma ~ Normal(0, 1) (standardised scale)."""

SHAPE_PRIOR = Prior("Gamma", alpha=2, beta=0.2)
"""Prior of each process's pooling strength kappa (segment multipliers' shape 1 + kappa)."""

#: Process -> (parameter, sign) per family (by class name, looked up along the class's MRO).
LINKS: dict[str, dict[str, tuple[str, int]]] = {
    "BetaGeoFamily": {"purchase": ("alpha", -1), "dropout": ("b", -1)},
    "ParetoNBDModel": {"purchase": ("alpha", -1), "dropout": ("beta", -1)},
    "BetaGeoBetaBinomModel": {"purchase": ("beta", -1), "dropout": ("delta", -1)},
    "GammaGammaModel": {"spend": ("gamma", +1)},
    "RetentionModel": {"churn": ("beta", -1)},
}

MAX_EXACT_CELLS = 256
"""Up to this many cells the likelihood's gradient is exact (one call of the family's own
weighted likelihood and gradient per cell); beyond, one vectorised likelihood over all
histories with per-history parameters is cheaper (central differences for MAP/Laplace, the
symbolic graph's gradient for NUTS)."""

_NEW_SEGMENT_SEED = 20_171_231  # draws of a segment not seen in training: reproducible


def links_of(base: type) -> dict[str, tuple[str, int]]:
    """The ``{process: (parameter, sign)}`` covariate links of a family class."""
    for klass in base.__mro__:
        if klass.__name__ in LINKS:
            return LINKS[klass.__name__]
    raise TypeError(f"{base.__name__} has no covariate links (clvbayes.models.segmented.LINKS).")


@dataclass(frozen=True)
class Term:
    """One column of the design: a numeric covariate, or one non-reference level."""

    column: str
    level: str | None  # None: numeric
    mean: float
    sd: float
    key: str  # history column holding its raw value (0/1 for a level)

    @property
    def label(self) -> str:
        return self.column if self.level is None else f"{self.column}[{self.level}]"


# ---------------------------------------------------------------------------- the class
@functools.cache
def segmented(base: type) -> type:
    """The covariate/pooling variant of a family class (created once per family)."""
    links_of(base)  # refuse families without links early
    name = base.__name__
    attrs = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"{name} with static covariates and/or partial pooling (see {__name__}).",
        "_base": base,
        "_symbolic_terms": None,  # per-distinct-value graph terms assume one parameter set
        "_fused_futures": None,  # the compiled accelerators assume one parameter set too
        "_fused_marks": None,
    }
    from clvbayes.models.base import CLVModel

    klass = type(name, (SegmentedModel, base), attrs)
    for attr, member in inspect.getmembers(base, inspect.isfunction):
        if attr.startswith("_") or hasattr(SegmentedModel, attr) or hasattr(CLVModel, attr):
            continue
        params = inspect.signature(member).parameters
        table_arg = next((a for a in ("rfm", "table") if a in params), None)
        setattr(klass, attr, _per_cell_method(attr, member, table_arg))
    return klass


def _per_cell_method(attr: str, member, table_arg: str | None):
    signature = inspect.signature(member)

    @functools.wraps(member)
    def method(self, *args, **kwargs):
        if table_arg is None:
            if self._trivial():
                return member(self._cell_model(self._only_cell()), *args, **kwargs)
            raise ModelError(
                f"{type(self).__name__}.{attr} is a population quantity, and with covariates or "
                "pooling it depends on the customer's profile: call it on "
                f"model.profile({', '.join(f'{c}=...' for c in self._profile_columns())})."
            )
        bound = signature.bind(self, *args, **kwargs)
        table = bound.arguments.get(table_arg)
        return self._dispatch_table(attr, table, table_arg, dict(bound.arguments))

    return method


class SegmentedModel:
    """Mixin holding the covariate and pooling machinery (see the module docstring).

    Not used directly: ``BetaGeoModel(covariates=["channel"], pooled_by="country")``
    returns an instance of ``segmented(BetaGeoModel)``, a subclass of both.

    Parameters
    ----------
    priors : dict of str to Prior, optional
        Replace a prior: the family's parameter names, ``<process>_pooling`` (with
        pooling, default Gamma(2, 0.2)), ``<process>_effect`` (the multiplier of every
        coefficient of a process, default LogNormal(0, 1)).
    covariates : list of str, or dict of process to list of str
        Columns of the customer table; a list applies to every process of the family.
    reference : dict of str to value, optional
        Reference level of a categorical covariate (default the first in sorted order).
    pooled_by : str, optional
        Segment column whose segments get partially pooled parameters.
    """

    _base: ClassVar[type]

    def __init__(
        self,
        priors: dict[str, Prior] | None = None,
        *,
        covariates: list[str] | dict[str, list[str]] | None = None,
        reference: dict[str, Any] | None = None,
        pooled_by: str | None = None,
    ) -> None:
        base = self._base
        links = links_of(base)
        if covariates is None:
            covariates = {}
        if isinstance(covariates, str):
            covariates = [covariates]
        if not isinstance(covariates, dict):
            covariates = {process: list(covariates) for process in links}
        unknown = sorted(set(covariates) - set(links))
        if unknown:
            raise ValueError(
                f"{base.__name__}: unknown process(es) {unknown} in covariates; "
                f"its processes are {', '.join(links)}."
            )
        self.covariates = {p: [str(c) for c in covariates.get(p, [])] for p in links}
        for process, cols in self.covariates.items():
            dup = sorted({c for c in cols if cols.count(c) > 1})
            if dup:
                raise ValueError(f"covariates for {process} name {dup} more than once.")
        self.reference = {str(k): v for k, v in (reference or {}).items()}
        self.pooled_by = None if pooled_by is None else str(pooled_by)
        self.terms_: list[Term] = []
        self.groups_: list[str] = []
        self._learned = False
        self.param_names = self._spec_names()
        self.default_priors = self._spec_priors()
        super().__init__(priors)

    # ------------------------------------------------------------------ names and priors
    def _spec_names(self) -> tuple[str, ...]:
        return (
            tuple(self._base.param_names)
            + self._pooling_names()
            + tuple(f"{p}_effect" for p, cols in self.covariates.items() if cols)
        )

    def _pooling_names(self) -> tuple[str, ...]:
        return tuple(f"{p}_pooling" for p in links_of(self._base)) if self.pooled_by else ()

    def _segment_names(self, process: str) -> list[str]:
        return [f"{process}_segment_{i}" for i in range(len(self.groups_))]

    def _spec_priors(self) -> dict[str, Prior]:
        out = dict(self._base.default_priors)
        out.update(dict.fromkeys(self._pooling_names(), SHAPE_PRIOR))
        out.update({f"{p}_effect": COEFFICIENT_PRIOR for p, c in self.covariates.items() if c})
        return out

    def _effect_names(self, process: str) -> list[str]:
        n = len(self._process_terms(process))
        return [f"{process}_effect_{j}" for j in range(n)]

    def _process_terms(self, process: str) -> list[Term]:
        cols = self.covariates[process]
        return [t for t in self.terms_ if t.column in cols]

    def _set_param_names(self) -> None:
        base = self._base
        names = list(base.param_names) + list(self._pooling_names())
        for process in links_of(base):
            if self.pooled_by:
                names += self._segment_names(process)
            names += self._effect_names(process)
        self.param_names = tuple(names)

    def _prior_of(self, name: str) -> Prior:
        if "_segment_" in name:
            raise KeyError(name)  # hierarchical: the segments' shared distribution
        if "_effect_" in name:
            return self.priors[name.rsplit("_", 1)[0]]
        return self.priors[name]

    def __repr__(self) -> str:
        spec = {p: c for p, c in self.covariates.items() if c}
        extra = (f", covariates={spec!r}" if spec else "") + (
            f", pooled_by={self.pooled_by!r}" if self.pooled_by else ""
        )
        return f"{type(self).__name__}({extra[2:]})"

    # ------------------------------------------------------------------ columns
    @property
    def _tag(self) -> str:
        return self._base.__name__

    @property
    def _segment_key(self) -> str:
        return f"_{self._tag}_segment"

    @property
    def _cell_columns(self) -> tuple[str, ...]:
        seg = (self._segment_key,) if self.pooled_by else ()
        return seg + tuple(t.key for t in self.terms_)

    @property
    def history_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._base.history_columns) + self._cell_columns

    @property
    def active_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._base.active_columns) + self._cell_columns

    @property
    def key_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._base.key_columns) + self._cell_columns

    def _profile_columns(self) -> list[str]:
        cols = sorted({c for cs in self.covariates.values() for c in cs})
        return cols + ([self.pooled_by] if self.pooled_by else [])

    def _trivial(self) -> bool:
        return self._learned and not self.terms_ and len(self.groups_) <= 1

    def _only_cell(self) -> np.ndarray:
        return np.zeros(len(self._cell_columns))

    # ------------------------------------------------------------------ data
    def fit(self, rfm: pd.DataFrame, method: str = "nuts", **kwargs: Any):
        """Fit on ``rfm`` (see :meth:`CLVModel.fit`); covariate coding and segments are
        learned from ``rfm``."""
        self._learned = False
        self.terms_, self.groups_ = [], []
        return super().fit(rfm, method, **kwargs)

    def _base_checked(self, rfm: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
        validate = getattr(self._base, "_validate", None)
        if validate is not None:
            return validate(self, rfm, **kwargs)
        from clvbayes.data import validate_spend, validate_subscribers
        from clvbayes.models.sbg import RetentionModel

        return validate_subscribers(rfm) if issubclass(self._base, RetentionModel) else (
            validate_spend(rfm)
        )  # fmt: skip

    def _validate(self, rfm: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
        self._require_columns(rfm)
        return self._annotate(self._base_checked(rfm, **kwargs), source=rfm)

    def _compress(self, rfm: pd.DataFrame) -> CompressedRFM:
        return compress(self._validate(rfm), columns=self.history_columns)

    def _require_columns(self, rfm: pd.DataFrame) -> None:
        needed = self._profile_columns()
        missing = [c for c in needed if c not in rfm.columns]
        if missing:
            usable = [str(c) for c in rfm.columns if c not in self._base.history_columns
                      and c != "monetary_value"]  # fmt: skip
            raise DataError(
                f"{type(self).__name__}: the customer table lacks the column(s) {missing} named "
                f"as covariates or pooled_by. Columns that could serve: {usable or 'none'}. Merge "
                "the customer attributes onto the table (one row per customer) or fix the names."
            )

    def _annotate(self, table: pd.DataFrame, source: pd.DataFrame | None = None) -> pd.DataFrame:
        """``table`` with this model's cell columns (raw covariate codes and segment index).

        The coding is learned on the first call of a fit; later calls apply it and refuse
        levels not seen in training.
        """
        if all(c in table.columns for c in self._cell_columns) and self._learned:
            return table
        source = table if source is None else source
        self._require_columns(source)
        frame = source.loc[table.index] if source is not table else source
        for col in self._profile_columns():
            _check_complete(frame[col], col)
        if not self._learned:
            self._learn(frame)
        out = table.copy()
        for term in self.terms_:
            values = frame[term.column]
            if term.level is None:
                out[term.key] = _numeric(values, term.column)
            else:
                out[term.key] = (values.astype(str) == term.level).astype(float)
        for col in {t.column for t in self.terms_ if t.level is not None}:
            known = {self._references_[col]} | {t.level for t in self.terms_ if t.column == col}
            seen = set(frame[col].astype(str).unique())
            unseen = sorted(seen - known)
            if unseen:
                raise DataError(
                    f"Covariate {col!r} has level(s) {unseen[:5]} that the model was not fitted "
                    f"on (fitted levels: {sorted(known)}). Map them onto fitted levels, or refit "
                    "on data that include them."
                )
        if self.pooled_by:
            labels = frame[self.pooled_by].astype(str)
            index = {g: i for i, g in enumerate(self.groups_)}
            codes = labels.map(index)
            new = sorted(set(labels[codes.isna()]))
            if new:
                warnings.warn(
                    f"{type(self).__name__}: segment(s) {new[:5]} of {self.pooled_by!r} were not "
                    f"in the training data ({len(self.groups_)} segments); they are predicted from "
                    "the population distribution of the segments.",
                    DataWarning,
                    stacklevel=3,
                )
            out[self._segment_key] = codes.fillna(-1).astype(float)
        return out

    def _learn(self, frame: pd.DataFrame) -> None:
        """Covariate coding (levels, reference, mean, sd) and segments from training data."""
        terms: list[Term] = []
        self._references_: dict[str, str] = {}
        columns = sorted({c for cs in self.covariates.values() for c in cs})
        for j, col in enumerate(columns):
            values = frame[col]  # complete: checked by _annotate
            if _is_numeric(values):
                x = _numeric(values, col)
                sd = float(np.std(x))
                if not sd > 0:
                    raise DataError(
                        f"Covariate {col!r} takes one value ({x[0]:g}) for every customer: it "
                        "carries no information. Drop it from covariates."
                    )
                terms.append(Term(col, None, float(np.mean(x)), sd, f"_{self._tag}_z{j}"))
                continue
            if isinstance(values.dtype, pd.CategoricalDtype):
                levels = [str(v) for v in values.cat.categories if (values == v).any()]
            else:
                levels = sorted(values.astype(str).unique())
            if len(levels) < 2:
                raise DataError(
                    f"Covariate {col!r} has one level ({levels[0]!r}) in the training data: it "
                    "carries no information. Drop it from covariates."
                )
            ref = self.reference.get(col)
            ref = levels[0] if ref is None else str(ref)
            if ref not in levels:
                raise DataError(
                    f"Reference level {ref!r} of covariate {col!r} is not among its levels "
                    f"{levels[:10]}."
                )
            self._references_[col] = ref
            for k, level in enumerate(lv for lv in levels if lv != ref):
                terms.append(Term(col, level, 0.0, 1.0, f"_{self._tag}_z{j}_{k}"))
        unknown_ref = sorted(set(self.reference) - set(self._references_))
        if unknown_ref:
            raise DataError(
                f"reference names {unknown_ref}, which are not categorical covariates of this "
                f"model (categorical covariates: {sorted(self._references_) or 'none'})."
            )
        self.terms_ = terms
        if self.pooled_by:
            self.groups_ = sorted(frame[self.pooled_by].astype(str).unique())
        self._learned = True
        self._set_param_names()

    # ------------------------------------------------------------------ parameters per cell
    def _cells(
        self, h: dict[str, np.ndarray], n: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distinct cells (columns of ``_cell_columns``, ``(k, C)``) and each row's cell."""
        cols = self._cell_columns
        n = len(next(iter(h.values()))) if n is None else n
        if not cols:
            return np.zeros((0, 1)), np.zeros(n, dtype=np.int64)
        stacked = np.stack([np.asarray(h[c], dtype=float) for c in cols])
        cells, inverse = np.unique(stacked, axis=1, return_inverse=True)
        return cells, inverse.ravel()

    def _cell_params(self, params: dict[str, Any], cell: np.ndarray, xp=NUMPY):
        """The family's parameters of one cell from the model's (any array shape)."""
        offset = 1 if self.pooled_by else 0
        z = {t.key: float(v) for t, v in zip(self.terms_, cell[offset:], strict=True)}
        return self._params_at(params, int(cell[0]) if self.pooled_by else None, z, xp)

    def _row_params(self, params: dict[str, Any], data, xp=NUMPY) -> dict[str, Any]:
        """Every history's family parameters (for ``_loglik``): arrays broadcasting to rows."""
        seg = data[self._segment_key] if self.pooled_by else None
        return self._params_at(params, seg, {t.key: data[t.key] for t in self.terms_}, xp)

    def _params_at(self, params, seg, z, xp=NUMPY) -> dict[str, Any]:
        """``theta_0 exp(sign (log u_seg + gamma' z_std))`` for each linked parameter.

        ``seg`` is one segment index (-1: not seen in training) or an array of them, ``z``
        the raw covariate values by term key (scalars or arrays)."""
        base = self._base
        out = {p: params[p] for p in base.param_names}
        for process, (p, sign) in links_of(base).items():
            terms = self._process_terms(process)
            if not terms and not self.pooled_by:
                continue
            log_m = 0.0
            if self.pooled_by:
                log_m = xp.log(self._segment_multiplier(params, process, seg, xp))
            for term, name in zip(terms, self._effect_names(process), strict=True):
                zs = (z[term.key] - term.mean) / term.sd
                if not (isinstance(zs, float) and zs == 0.0):
                    log_m = log_m + zs * xp.log(params[name])
            out[p] = out[p] * xp.exp(sign * log_m)
        return out

    def _segment_multiplier(self, params, process: str, seg, xp):
        names = self._segment_names(process)
        if isinstance(seg, int):  # one cell
            return params[names[seg]] if seg >= 0 else self._new_segment(params, process)
        return _select([params[n] for n in names], seg, xp)

    def _new_segment(self, params: dict[str, Any], process: str) -> np.ndarray:
        """Draws of a segment not seen in training: its multiplier from the shared Gamma."""
        rng = np.random.default_rng(_NEW_SEGMENT_SEED + list(links_of(self._base)).index(process))
        k = 1.0 + np.asarray(params[f"{process}_pooling"], dtype=float)
        return rng.gamma(k) / k

    # ------------------------------------------------------------------ likelihood and priors
    def _loglik(self, params, data, xp=NUMPY):
        if xp is NUMPY:
            data = {c: np.asarray(data[c]) for c in self.history_columns}
        return self._base._loglik(self, self._row_params(params, data, xp), data, xp=xp)

    def _loglik_sum_function(self, data: CompressedRFM):
        base = self._base
        weights = self._likelihood_weights(data)
        cells, inverse = self._cells(data.values)
        if cells.shape[1] > MAX_EXACT_CELLS:
            return None
        index = {name: j for j, name in enumerate(self.param_names)}
        links = links_of(base)
        offset = 1 if self.pooled_by else 0
        slots = np.array([index[p] for p in base.param_names])
        parts = []
        for c in range(cells.shape[1]):
            rows = np.flatnonzero((inverse == c) & (weights > 0))
            if rows.size == 0:
                continue
            sub = _subset(data, rows)
            f = base._loglik_sum_function(self, sub)
            if f is None:
                return None
            cell = cells[:, c]
            z = dict(zip((t.key for t in self.terms_), cell[offset:], strict=True))
            effects = []  # (parameter position, effect slot, sign x standardised value)
            for process, (p, sign) in links.items():
                pos = base.param_names.index(p)
                if self.pooled_by:
                    effects.append((pos, index[f"{process}_segment_{int(cell[0])}"], sign))
                for term, name in zip(self._process_terms(process), self._effect_names(process),
                                      strict=True):  # fmt: skip
                    zs = (float(z[term.key]) - term.mean) / term.sd
                    if zs != 0.0:
                        effects.append((pos, index[name], sign * zs))
            parts.append((f, effects))
        n_params = len(self.param_names)

        def total_and_grad(*values):
            values = np.asarray(values, dtype=float)
            log_values = np.log(values)
            total, grad = 0.0, np.zeros(n_params)
            for f, effects in parts:
                log_theta = log_values[slots].copy()
                for pos, slot, coef in effects:
                    log_theta[pos] += coef * log_values[slot]
                theta = np.exp(log_theta)
                value, g = f(*theta)
                total += float(value)
                dlog = np.asarray(g, dtype=float) * theta  # d loglik / d log theta_cell
                np.add.at(grad, slots, dlog / values[slots])
                for pos, slot, coef in effects:
                    grad[slot] += dlog[pos] * coef / values[slot]
            return total, grad

        return total_and_grad

    def _log_prior(self, params: dict[str, float]) -> float:
        base = self._base
        spec = tuple(base.param_names) + self._pooling_names()
        out = float(sum(float(self.priors[k].logpdf(params[k])) for k in spec))
        for process in links_of(base):
            for name in self._effect_names(process):
                out += float(self._prior_of(name).logpdf(params[name]))
            if self.pooled_by:  # u_s ~ Gamma(k, rate k), k = 1 + kappa
                k = 1.0 + params[f"{process}_pooling"]
                u = np.array([params[n] for n in self._segment_names(process)])
                out += float(np.sum(k * np.log(k) - special.gammaln(k) + (k - 1) * np.log(u)
                                    - k * u))  # fmt: skip
        return out

    def _pymc_params(self) -> dict[str, Any]:
        import pymc as pm

        base = self._base
        spec = tuple(base.param_names) + self._pooling_names()
        rvs = {k: self.priors[k].to_pymc(k) for k in spec}
        for process in links_of(base):
            if self.pooled_by:
                k = 1.0 + rvs[f"{process}_pooling"]
                for name in self._segment_names(process):
                    rvs[name] = pm.Gamma(name, alpha=k, beta=k)
            for name in self._effect_names(process):
                rvs[name] = self._prior_of(name).to_pymc(name)
        return rvs

    def _initial_point(self, data: CompressedRFM) -> dict[str, float]:
        base_point = self._base._initial_point(self, data)
        point = {p: float(base_point[p]) for p in self._base.param_names}
        for process in links_of(self._base):
            point.update(dict.fromkeys(self._effect_names(process), 1.0))
            if self.pooled_by:
                point[f"{process}_pooling"] = 10.0
                point.update(dict.fromkeys(self._segment_names(process), 1.0))
        return point

    def _check_information(self, n_fitted: int) -> list[str]:
        """The family's checks plus a FitWarning naming weakly identified parameters."""
        from clvbayes.errors import FitWarning
        from clvbayes.models.identification import WEAK_FACTOR

        messages = super()._check_information(n_fitted)
        try:
            table = self.identification()
        except Exception:
            return messages
        weak = table.index[table["weak"]].tolist()
        if weak:
            factors = ", ".join(f"{k} x{table.loc[k, 'interval_factor']:.0f}" for k in weak)
            msg = (
                f"{type(self).__name__}: the data barely identify {weak} (90% interval spans "
                f"more than a factor {WEAK_FACTOR:g}: {factors}), so predictions that depend on "
                "them lean on the prior. See model.identification(); fit with priors (method "
                "'map', 'laplace' or 'nuts' rather than 'mle'), fewer covariates, or more data."
            )
            warnings.warn(msg, FitWarning, stacklevel=3)
            messages.append(msg)
        return messages

    # ------------------------------------------------------------------ protocol, cell by cell
    def _cell_rows(self, h: dict[str, np.ndarray], n: int):
        """``(cell, row positions)`` of every cell present among the ``n`` rows of ``h``."""
        cells, inverse = self._cells(h, n)
        for c in range(max(cells.shape[1], 1)):
            rows = np.flatnonzero(inverse == c)
            if rows.size:
                yield (cells[:, c] if cells.size else self._only_cell()), rows

    def _table_cells(self, annotated: pd.DataFrame):
        """:meth:`_cell_rows` of a table that carries the cell columns."""
        h = {c: annotated[c].to_numpy(dtype=float) for c in self._cell_columns}
        return self._cell_rows(h, len(annotated))

    def _by_cell(self, h, call):
        """``[(rows, call(cell, rows of h))]`` over the cells present in ``h``."""
        n = len(next(iter(h.values())))
        return [(rows, call(cell, {k: np.asarray(v)[rows] for k, v in h.items()}))
                for cell, rows in self._cell_rows(h, n)]  # fmt: skip

    def _p_alive_arrays(self, params, h):
        parts = self._by_cell(h, lambda cell, sub: self._base._p_alive_arrays(
            self, self._cell_params(params, cell), sub))  # fmt: skip
        return _scatter(parts, len(next(iter(h.values()))))

    def _expected_active_arrays(self, params, keys, ends, factors):
        parts = self._by_cell(keys, lambda cell, sub: self._base._expected_active_arrays(
            self, self._cell_params(params, cell), sub, ends, factors))  # fmt: skip
        n = len(next(iter(keys.values())))
        return tuple(_scatter([(rows, res[i]) for rows, res in parts], n) for i in range(2))

    def _active_state(self, rng, params, keys):
        parts = self._by_cell(keys, lambda cell, sub: self._base._active_state(
            self, rng, self._cell_params(params, cell), sub))  # fmt: skip
        n = len(next(iter(keys.values())))
        return {k: _scatter([(rows, res[k]) for rows, res in parts], n) for k in parts[0][1]}

    def _expected_spend_arrays(self, params, h):
        parts = self._by_cell(h, lambda cell, sub: self._base._expected_spend_arrays(
            self, self._cell_params(params, cell), sub))  # fmt: skip
        return _scatter(parts, len(next(iter(h.values()))))

    def _value_scale_arrays(self, params, h):
        parts = self._by_cell(h, lambda cell, sub: self._base._value_scale_arrays(
            self, self._cell_params(params, cell), sub))  # fmt: skip
        return _scatter(parts, len(next(iter(h.values()))))

    def _unit_state(self, rng, params, keys):
        parts = self._by_cell(keys, lambda cell, sub: self._base._unit_state(
            self, rng, self._cell_params(params, cell), sub))  # fmt: skip
        n = len(next(iter(keys.values())))
        return {k: _scatter([(rows, res[k]) for rows, res in parts], n) for k in parts[0][1]}

    # ------------------------------------------------------------------ per-cell models
    def _cell_model(self, cell: np.ndarray):
        """The plain family model holding one cell's posterior draws."""
        from clvbayes.compat import posterior_from_arrays

        model = self._base()
        model.posterior_ = posterior_from_arrays(self._cell_params(self.draws(), cell))
        model.time_unit_ = getattr(self, "time_unit_", None)
        model.fit_info_ = dict(getattr(self, "fit_info_", {}))
        model.data_ = None
        return model

    def profile(self, **values: Any):
        """The plain family model of one customer profile (covariate values and segment).

        Examples
        --------
        >>> model.profile(channel="offline", country="DE").expected_purchases_new(52)  # doctest: +SKIP
        """
        self._check_fitted()
        needed = self._profile_columns()
        missing = [c for c in needed if c not in values]
        extra = sorted(set(values) - set(needed))
        if missing or extra:
            raise ValueError(
                f"profile() needs exactly the values of {needed}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {extra}" if extra else "")
                + "."
            )
        row = pd.DataFrame({c: [values[c]] for c in needed})
        annotated = self._annotate(row.copy(), source=row)
        cell = np.array([float(annotated[c].iloc[0]) for c in self._cell_columns])
        return self._cell_model(cell)

    def _cells_of_table(self, table: pd.DataFrame) -> list[tuple[Any, np.ndarray]]:
        """``[(family model of the cell, row positions)]`` over the rows of ``table``; the
        cell models share the draw index, so sums over them are joint-draw sums."""
        return [(self._cell_model(cell), rows)
                for cell, rows in self._table_cells(self._validate(table))]  # fmt: skip

    def _training_table(self) -> pd.DataFrame:
        data = self._resolve_data(None)
        table = pd.DataFrame({c: np.asarray(data[c])[data.inverse] for c in data.columns},
                             index=data.customer_ids)  # fmt: skip
        table.attrs["time_unit"] = getattr(self, "time_unit_", None)
        return table

    def _dispatch_table(self, attr: str, table, table_arg: str, arguments: dict[str, Any]):
        """A per-customer method of the family, run per cell and put back in table order."""
        import xarray as xr

        self._check_fitted()
        if table is None:  # the training data carry the cell columns already
            table = annotated = self._training_table()
        else:
            annotated = self._validate(table)
        arguments.pop("self", None)
        pieces, order = [], []
        for cell, rows in self._table_cells(annotated):
            model = self._cell_model(cell)
            result = getattr(model, attr)(**{**arguments, table_arg: table.iloc[rows]})
            if not isinstance(result, xr.DataArray) or result.dims[-1] != "customer_id":
                raise NotImplementedError(
                    f"{type(self).__name__}.{attr} returns {type(result).__name__}, which cannot "
                    "be assembled across cells; call it on model.profile(...) per profile."
                )
            pieces.append(result)
            order.append(rows)
        combined = xr.concat(pieces, dim="customer_id")
        position = np.empty(len(annotated), dtype=np.int64)
        position[np.concatenate(order)] = np.arange(len(annotated))
        return combined.isel(customer_id=position)

    # ------------------------------------------------------------------ reporting
    def _original_scale_draws(self) -> dict[str, np.ndarray]:
        """Draws under reporting names, on the covariates' original scale.

        Coefficients ``<process>:<term>`` (gamma; positive raises the process's rate) per unit
        of a numeric covariate or for a level against the reference; base parameters at the
        reference (numeric covariates at 0); with pooling, ``<process>_pooling`` (kappa) and
        each segment's log rate multiplier ``<process>:<pooled_by>=<segment>``.
        """
        base = self._base
        d = self.draws()
        out: dict[str, np.ndarray] = {}
        shift: dict[str, np.ndarray] = {}  # log factor of each linked parameter at z = 0
        for process, (p, sign) in links_of(base).items():
            total = 0.0
            for term, name in zip(self._process_terms(process), self._effect_names(process),
                                  strict=True):  # fmt: skip
                gamma = np.log(d[name]) / term.sd
                out[f"{process}:{term.label}"] = gamma
                total = total - sign * gamma * term.mean
            shift[p] = np.exp(total)
        for p in base.param_names:
            out[p] = d[p] * shift.get(p, 1.0)
        if self.pooled_by:
            for process in links_of(base):
                out[f"{process}_pooling"] = d[f"{process}_pooling"]
                for g, name in zip(self.groups_, self._segment_names(process), strict=True):
                    out[f"{process}:{self.pooled_by}={g}"] = np.log(d[name])
        order = [k for k in out if ":" not in k] + [k for k in out if ":" in k]
        return {k: out[k] for k in order}

    def summary(self, prob: float = 0.9) -> pd.DataFrame:
        """Parameter table on the original scale (see :meth:`_original_scale_draws`):
        mean, sd, equal-tailed interval, r_hat, ESS."""
        from clvbayes.models.base import summary_table

        self._check_fitted()
        return summary_table(self._original_scale_draws(), prob)

    def coefficients(self, prob: float = 0.9) -> pd.DataFrame:
        """The covariate effects: one row per process and term, original scale.

        Columns ``process``, ``term``, ``parameter`` (the family parameter it shifts),
        ``mean``, ``lower_<prob>``, ``upper_<prob>``, ``rate_ratio`` (exp(mean): the factor on
        the process's rate per unit or for the level), ``reference`` (a categorical's
        reference level).
        """
        table = self.summary(prob)
        rows = []
        links = links_of(self._base)
        for name in table.index:
            if ":" not in name:
                continue
            process, label = name.split(":", 1)
            term = next(t for t in self._process_terms(process) if t.label == label)
            rows.append({
                "process": process, "term": label, "parameter": links[process][0],
                **table.loc[name, ["mean", f"lower_{prob:g}", f"upper_{prob:g}"]].to_dict(),
                "rate_ratio": float(np.exp(table.loc[name, "mean"])),
                "reference": None if term.level is None else self._references_[term.column],
            })  # fmt: skip
        return pd.DataFrame(rows)

    def segment_table(self, prob: float = 0.9) -> pd.DataFrame:
        """Each segment's pooled rate ratio per process (posterior mean and interval of the
        segment's multiplier of the process's rate; 1 = the base as a whole)."""
        if not self.pooled_by:
            raise ModelError(f"{type(self).__name__} is not pooled: pass pooled_by=... to fit.")
        d = self.draws()
        lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
        rows = {}
        for i, g in enumerate(self.groups_):
            row = {}
            for process in links_of(self._base):
                u = np.asarray(d[f"{process}_segment_{i}"], dtype=float).ravel()
                point = u.size == 1  # a MAP/MLE fit: no interval
                row.update({f"{process}_rate_ratio": float(np.mean(u)),
                            f"{process}_lower": np.nan if point else float(np.quantile(u, lo)),
                            f"{process}_upper": np.nan if point else float(np.quantile(u, hi))})  # fmt: skip
            rows[g] = row
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis(self.pooled_by)

    def segment_comparison(
        self, rfm: pd.DataFrame | None = None, prob: float = 0.9
    ) -> pd.DataFrame:
        """Raw (unpooled) vs pooled rate ratio of every segment, per process.

        *Raw*: the same family and covariates with the segment as a fixed categorical
        covariate, fitted by MAP on ``rfm`` (default the training data).  *Pooled*: this
        model's segment multipliers (:meth:`segment_table`).  Both are centred on their
        customer-weighted geometric mean (draw by draw for the pooled), so 1 is the base as
        a whole; ``<process>_pooled`` is the geometric mean of the draws.
        Small segments' raw ratios scatter; the pooled ones shrink towards 1.

        Returns
        -------
        pandas.DataFrame
            Index: the segments; ``n_customers`` and per process ``<process>_raw``,
            ``<process>_pooled``, ``<process>_pooled_lower``, ``<process>_pooled_upper``.
        """
        if not self.pooled_by:
            raise ModelError(f"{type(self).__name__} is not pooled: pass pooled_by=... to fit.")
        table = self._training_table() if rfm is None else rfm
        if rfm is None:  # the training data hold codes, not the segment labels
            codes = table[self._segment_key].astype(int).to_numpy()
            table = table.assign(**{self.pooled_by: np.asarray(self.groups_, dtype=object)[codes]})
            for term in self.terms_:  # and the covariates: numeric values, levels from codes
                if term.level is None:
                    table[term.column] = table[term.key]
            for col in {t.column for t in self.terms_ if t.level is not None}:
                keys = [t for t in self.terms_ if t.column == col]
                value = pd.Series(self._references_[col], index=table.index, dtype=object)
                for t in keys:
                    value[table[t.key].to_numpy() == 1.0] = t.level
                table[col] = value
        covs = {p: [*c, self.pooled_by] for p, c in self.covariates.items()}
        largest = table[self.pooled_by].astype(str).value_counts().index[0]
        raw = self._base(covariates=covs, reference={**self.reference, self.pooled_by: largest})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw.fit(table, method="map")
        counts = table[self.pooled_by].astype(str).value_counts().reindex(self.groups_).fillna(0)
        own = self.draws()
        lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
        out = pd.DataFrame({"n_customers": counts.astype(int)}, index=pd.Index(self.groups_))
        d = raw.draws()
        for process in links_of(self._base):
            log_r = pd.Series(0.0, index=self.groups_)
            for term, name in zip(raw._process_terms(process), raw._effect_names(process),
                                  strict=True):  # fmt: skip
                if term.column == self.pooled_by:
                    log_r[term.level] = float(np.log(np.ravel(d[name])[0]))
            w = counts / counts.sum()
            out[f"{process}_raw"] = np.exp(log_r - float(np.sum(w * log_r)))
            # pooled multipliers, centred the same way draw by draw
            log_u = np.stack([np.log(np.ravel(own[n])) for n in self._segment_names(process)])
            ratio = np.exp(log_u - np.sum(w.to_numpy()[:, None] * log_u, axis=0))
            point = ratio.shape[1] == 1
            out[f"{process}_pooled"] = np.exp(np.log(ratio).mean(axis=1))  # geometric mean
            out[f"{process}_pooled_lower"] = np.nan if point else np.quantile(ratio, lo, axis=1)
            out[f"{process}_pooled_upper"] = np.nan if point else np.quantile(ratio, hi, axis=1)
        return out.rename_axis(self.pooled_by)

    # ------------------------------------------------------------------ save / load
    def _attrs(self) -> dict[str, Any]:
        return {
            **super()._attrs(),
            "structure": json.dumps({
                "covariates": self.covariates, "reference": {k: str(v) for k, v in
                                                             self.reference.items()},
                "pooled_by": self.pooled_by, "terms": [asdict(t) for t in self.terms_],
                "references": getattr(self, "_references_", {}), "groups": self.groups_,
            }),
        }  # fmt: skip

    def _restore(self, attrs: dict[str, Any]) -> None:
        spec = json.loads(attrs["structure"])
        self.terms_ = [Term(**t) for t in spec["terms"]]
        self._references_ = dict(spec["references"])
        self.groups_ = list(spec["groups"])
        self._learned = True
        self._set_param_names()


def structure_kwargs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of a saved segmented model (empty for a plain one)."""
    if "structure" not in attrs:
        return {}
    spec = json.loads(attrs["structure"])
    return {"covariates": spec["covariates"], "reference": spec["reference"] or None,
            "pooled_by": spec["pooled_by"]}  # fmt: skip


# ---------------------------------------------------------------------------- helpers
def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _numeric(values: pd.Series, col: str) -> np.ndarray:
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(x)
    if bad.any():
        ids = list(values.index[bad][:5])
        raise DataError(
            f"Covariate {col!r} has {int(bad.sum())} non-numeric or infinite value(s) (customer "
            f"ids {ids}). A numeric covariate needs a finite number for every customer; fix the "
            "values, or make the column text to treat it as categorical."
        )
    return x


def _check_complete(values: pd.Series, col: str) -> None:
    missing = values.isna().to_numpy()
    if missing.any():
        ids = list(values.index[missing][:5])
        raise DataError(
            f"Column {col!r} is missing for {int(missing.sum())} customer(s) (ids {ids}). Fill "
            "it (e.g. an 'unknown' level for a categorical covariate) or drop those customers."
        )


def _select(values: list[Any], index, xp):
    """``values[index[i]]`` for every row ``i``, each value an array of draws or a scalar."""
    if xp is NUMPY:
        index = np.asarray(index).astype(np.int64)
        arrays = [np.asarray(v, dtype=float) for v in values]
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        stacked = np.stack([np.broadcast_to(a, shape) for a in arrays])  # (G, *shape)
        picked = np.moveaxis(stacked[index], 0, -1)  # (*shape, n)
        if shape and shape[-1] == 1:
            picked = picked[..., 0, :]
        return picked
    import pytensor.tensor as pt

    return pt.stack(values)[pt.cast(index, "int64")]


def _subset(data: CompressedRFM, rows: np.ndarray) -> CompressedRFM:
    return CompressedRFM(
        values={c: np.asarray(v)[rows] for c, v in data.values.items()},
        counts=np.asarray(data.counts)[rows], inverse=np.arange(rows.size),
        customer_ids=pd.RangeIndex(rows.size), columns=data.columns,
    )  # fmt: skip


def _scatter(parts: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """Put per-cell results ``(S, rows)`` back into one ``(S, n)`` array."""
    s = max(np.asarray(r).shape[0] if np.ndim(r) == 2 else 1 for _, r in parts)
    out = np.empty((s, n), dtype=np.result_type(*(np.asarray(r).dtype for _, r in parts)))
    for rows, res in parts:
        out[:, rows] = np.broadcast_to(np.asarray(res), (s, rows.size))
    return out
