"""Peak memory of the outcome simulation (issue 12 #5): bounded by the chunk size.

The segment totals of small segments (< ``EXACT_SEGMENT_MIN`` customers) are simulated
customer by customer.  That simulation once kept one purchase time (and several arrays of the
same length) per simulated purchase: 1,500 customers buying ~2 times a week peaked at 6.7 GB
at a 52-week horizon and raised MemoryError at 156 weeks.  The generic composition
(:func:`clvbayes.predict.outcomes.generic_active_futures`) now advances each customer's latent
state period by period and sums as it goes, so memory is a few arrays of (outcome samples x
customers in a chunk), whatever the purchase model, the purchase rate and the horizon.

Each measurement runs in a fresh subprocess: ``tracemalloc`` (every NumPy allocation) and the
growth of the peak resident set size (``resource.getrusage``) over a warm-up run that
compiles the kernels.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

MIB = 2**20
# Stated bounds for the case below (30,000 customer-samples x ~312 purchases each, i.e.
# 9.4e6 simulated purchases, whose stored times alone took 75 MiB and, with their companion
# arrays, ~0.6 GB; at 200 samples the old path peaked at 4,225 MiB traced, the new at 31):
# NumPy allocations and resident-set growth during scoring.
TRACED_BOUND_MIB = 150
RSS_GROWTH_BOUND_MIB = 300

_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time, tracemalloc
    import numpy as np, pandas as pd
    from clvbayes.models import BetaGeoModel, GammaGammaModel, ParetoNBDModel
    from clvbayes.predict import score_customers

    def fixed(cls, **values):
        model = cls()
        draws = {k: np.full((1, 4), v) for k, v in values.items()}
        model.draws = lambda: draws
        model.time_unit_ = "weeks"
        return model

    n, horizon, samples = (float(v) for v in sys.argv[1:4])
    n = int(n)
    family = sys.argv[4]
    rng = np.random.default_rng(0)
    rfm = pd.DataFrame(
        {"frequency": 104.0, "recency": 51.5, "T": 52.0, "monetary_value": 30.0,
         "segment": rng.choice(["a", "b", "c"], n)},
        index=pd.Index([f"c{i}" for i in range(n)], name="customer_id"),
    )
    rfm.attrs["time_unit"] = "weeks"
    if family == "pnbd":  # ~2 purchases a week, mean lifetime ~ 400 weeks
        bg = fixed(ParetoNBDModel, r=2.0, alpha=1.0, s=0.05, beta=20.0)
    else:
        bg = fixed(BetaGeoModel, r=2.0, alpha=1.0, a=0.05, b=20.0)
    gg = fixed(GammaGammaModel, p=6.0, q=4.0, gamma=15.0)
    kw = dict(by="segment", n_outcome_samples=int(samples), annual_discount_rate=0.1, seed=1)
    score_customers(rfm.iloc[:30], bg, gg, horizon=2.0, **kw)  # compile the kernels
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    res = score_customers(rfm, bg, gg, horizon=horizon, **kw)
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    seg = res.segments["segment"]
    print(json.dumps({
        "traced_mib": traced / 2**20, "rss_growth_mib": grown / 1024, "seconds": seconds,
        "purchases_total_mean": seg["purchases_total_mean"].tolist(),
        "purchases_total_pi": [seg["purchases_total_pi_lower"].tolist(),
                               seg["purchases_total_pi_upper"].tolist()],
    }))
    """
)


def _measure(n: int, horizon: float, samples: int, family: str = "bgnbd") -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(n), str(horizon), str(samples), family],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family", ["bgnbd", "pnbd"])
def test_outcome_simulation_memory_is_bounded_for_frequent_buyers_over_156_weeks(family):
    """1,500 customers buying ~2 times a week, 156-week horizon, three small segments."""
    got = _measure(1500, 156.0, 20, family)
    assert got["traced_mib"] < TRACED_BOUND_MIB, got
    assert got["rss_growth_mib"] < RSS_GROWTH_BOUND_MIB, got
    # and the totals are sane: ~500 customers x ~300 purchases each, inside their interval
    for mean, lo, hi in zip(got["purchases_total_mean"], *got["purchases_total_pi"], strict=True):
        assert 1e5 < mean < 2.5e5 and lo < mean < hi


@pytest.mark.slow
def test_outcome_simulation_memory_is_bounded_at_full_sample_size():
    """The issue's case at the default 1,000 outcome samples (1.5 million customer-samples,
    4.7e8 simulated purchases: ~3.7 GB of stored times before)."""
    got = _measure(1500, 156.0, 1000)
    assert got["traced_mib"] < 2 * TRACED_BOUND_MIB, got
    assert got["rss_growth_mib"] < 2 * RSS_GROWTH_BOUND_MIB, got
