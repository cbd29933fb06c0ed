"""clvbayes' own NUTS: multinomial No-U-Turn sampling of ``theta = log(params)`` in NumPy.

Why our own sampler: once identical histories are compressed, a gradient of a clvbayes
likelihood costs tens to hundreds of microseconds (``_loglik_sum_function``), so a whole
NUTS fit is a second or two of arithmetic.  PyMC's NUTS spends most of a fit elsewhere:
``import pymc``, compiling the PyTensor graph (gcc on an empty cache), and its per-step
Python machinery in one process per chain (``benchmarks/results/peer_py312.md``: 104 s of
a 133 s BG/NBD fit under load, for ~5 s of gradients).  This module is the algorithm and
nothing else: it calls ``f(theta) -> (log density, gradient)`` directly, keeps every chain
in one process (or one per core, see :func:`sample`) and returns the draws at once.

The algorithm is the one Stan and PyMC run (Hoffman & Gelman 2014; Betancourt 2017):

* leapfrog integration with a dense metric (the inverse mass matrix is a covariance of
  ``theta``), trajectories doubled in a random direction up to ``max_treedepth``;
* multinomial sampling of the trajectory's states, biased progressive sampling between
  sub-trees, and the generalised no-U-turn criterion checked across each merged tree and
  its two halves (the additional checks Stan adds);
* a transition whose energy error exceeds ``MAX_ENERGY_ERROR`` is divergent (reported,
  never hidden);
* tuning: dual averaging of the step size towards ``target_accept`` (gamma 0.05, t0 10,
  kappa 0.75), and the dense metric re-estimated in Stan's doubling windows (initial buffer
  75, first window 25, terminal buffer 50; proportionally shorter for short tuning), each
  estimate shrunk towards the starting covariance with weight 5 / (n + 5).  The starting
  covariance is the Laplace approximation's (:func:`clvbayes.inference.laplace_approximation`),
  so sampling is well scaled from the first step even when the posterior sd in log space is
  1e-3 (a million customers).

Correctness is tested against independent references: draws from correlated and
badly-scaled normals (mean and covariance within Monte Carlo error), and the CDNOW
posteriors against PyMC's sampler (``tests/test_nuts.py``); the statistical tests of every
model (reference fits, coverage, SBC) run on it because it is the default.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "MAX_ENERGY_ERROR",
    "NutsResult",
    "sample",
    "start_workers",
    "stop_workers",
    "submit",
    "tuning_schedule",
]

MAX_ENERGY_ERROR = 1000.0
"""A leapfrog step whose Hamiltonian rises by more than this ends a transition as divergent."""

LogDensity = Callable[[np.ndarray], tuple[float, np.ndarray]]

STAT_NAMES = ("diverging", "tree_depth", "n_steps", "step_size", "acceptance_rate", "energy",
              "energy_error", "lp")  # fmt: skip
"""Per-draw statistics, named as ArviZ's ``sample_stats`` group names them."""


@dataclass
class NutsResult:
    """Draws of ``theta`` and per-draw statistics of every chain.

    Attributes
    ----------
    theta : ndarray, shape (chains, draws, n)
        Draws after tuning.
    stats : dict of str to ndarray, each shape (chains, draws)
        ``STAT_NAMES``: divergence flag, tree depth, leapfrog steps, step size, mean
        acceptance probability of the trajectory, Hamiltonian of the drawn state, energy
        change, log density.
    step_size : ndarray, shape (chains,)
        Tuned step size per chain.
    inv_mass : ndarray, shape (chains, n, n)
        Tuned dense metric (covariance of ``theta``) per chain.
    n_gradients : int
        Log-density-and-gradient evaluations, tuning included.
    seconds : float
        Wall time of the sampling.
    """

    theta: np.ndarray
    stats: dict[str, np.ndarray]
    step_size: np.ndarray
    inv_mass: np.ndarray
    n_gradients: int
    seconds: float
    tuning_stats: dict[str, np.ndarray] = field(default_factory=dict)


#: Fewest tuning iterations after the last metric update (step size only), and fewest
#: iterations a metric window may hold (see :func:`tuning_schedule`).
MIN_TERMINAL, MIN_WINDOW = 20, 20


def tuning_schedule(tune: int) -> list[int]:
    """Iterations (0-based, within tuning) after which the dense metric is re-estimated.

    Stan's windows: an initial buffer of 75 iterations (step size only), windows of 25, 50,
    100, ... (the last one stretched to the terminal buffer) and a terminal buffer of 50; for
    ``tune < 150`` the initial buffer is 15 % of ``tune``, the terminal buffer 10 % but at
    least :data:`MIN_TERMINAL` iterations (the step size is tuned afresh for the new metric
    there, and a few iterations of dual averaging leave it far too large: every trajectory
    diverges and the chain stands still), and one window fills the rest if it holds at
    least :data:`MIN_WINDOW` iterations.  Returns the last iteration of each window; empty
    for step-size-only tuning (``tune < 46``).
    """
    if tune < 150:
        start, end = int(0.15 * tune), tune - max(int(0.1 * tune), MIN_TERMINAL)
        return [end - 1] if end - start >= MIN_WINDOW else []
    start, end, width = 75, tune - 50, 25
    ends = []
    while start < end:
        stop = start + width
        if stop + 2 * width > end:  # the next window would not fit: stretch this one
            stop = end
        ends.append(stop - 1)
        start, width = stop, 2 * width
    return ends


class _Chain:
    """One Markov chain: the current state, the metric and the tree building."""

    def __init__(self, f: LogDensity, theta: np.ndarray, inv_mass: np.ndarray,
                 rng: np.random.Generator, max_treedepth: int) -> None:  # fmt: skip
        self.f = f
        self.rng = rng
        self.max_treedepth = max_treedepth
        self.n_grad = 0
        self.theta = np.asarray(theta, dtype=float).copy()
        self.lp, self.grad = self._eval(self.theta)
        if not np.isfinite(self.lp):
            raise ValueError(f"the log density is not finite at the starting point {self.theta}")
        self.set_metric(inv_mass)

    def _eval(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        self.n_grad += 1
        lp, grad = self.f(theta)
        return float(lp), np.asarray(grad, dtype=float)

    def set_metric(self, inv_mass: np.ndarray) -> None:
        """Use ``inv_mass`` (a covariance of theta) as the metric: momenta ~ N(0, inv_mass^-1)."""
        self.inv_mass = np.array(inv_mass, dtype=float)
        chol = np.linalg.cholesky(self.inv_mass)
        # p = L^-T z has covariance (L L^T)^-1 = inv_mass^-1
        self.momentum_map = np.linalg.inv(chol).T

    # -- the integrator -------------------------------------------------------------
    def _leapfrog(self, theta, p, grad, eps):
        p_half = p + (0.5 * eps) * grad
        theta_new = theta + eps * (self.inv_mass @ p_half)
        lp, grad_new = self._eval(theta_new)
        p_new = p_half + (0.5 * eps) * grad_new
        return theta_new, p_new, grad_new, lp

    def _hamiltonian(self, lp: float, p: np.ndarray, sharp: np.ndarray | None = None) -> float:
        """``-lp`` plus the kinetic energy; ``sharp`` is ``inv_mass @ p`` where known."""
        h = -lp + 0.5 * float(p @ (self.inv_mass @ p if sharp is None else sharp))
        return h if math.isfinite(h) else math.inf

    def draw_momentum(self) -> np.ndarray:
        return self.momentum_map @ self.rng.standard_normal(self.theta.size)

    # -- one NUTS transition ----------------------------------------------------------
    def transition(self, eps: float) -> dict[str, float]:
        """Move the chain by one NUTS transition with step size ``eps``; returns its stats."""
        p0 = self.draw_momentum()
        h0 = self._hamiltonian(self.lp, p0)
        sharp0 = self.inv_mass @ p0
        # the two ends of the trajectory, (theta, p, grad, lp), and inv_mass @ p at each
        fwd = bck = (self.theta, p0, self.grad, self.lp)
        sharp_fwd = sharp_bck = sharp0
        rho = p0  # summed momenta of the trajectory
        log_w = 0.0  # log of the summed weights exp(h0 - h); the initial state has 1
        sample = (self.theta, self.grad, self.lp, p0)
        acc = {"sum_accept": 0.0, "n_steps": 0, "divergent": False}
        depth = 0
        while depth < self.max_treedepth:
            forward = self.rng.random() < 0.5
            old_end, old_sharp = (fwd, sharp_fwd) if forward else (bck, sharp_bck)
            sub = self._build(old_end, depth, eps if forward else -eps, h0, acc)
            if sub is None:  # divergent or U-turn inside the new sub-tree: not used
                break
            edge, proposal, sub_log_w, sub_rho, sharp_inner, sharp_outer, p_inner, _ = sub
            depth += 1
            # biased progressive sampling: prefer the new sub-tree
            if sub_log_w > log_w or self.rng.random() < math.exp(sub_log_w - log_w):
                sample = proposal
            log_w = _logaddexp(log_w, sub_log_w)
            old_rho, rho = rho, rho + sub_rho
            if forward:
                fwd, sharp_fwd = edge, sharp_outer
            else:
                bck, sharp_bck = edge, sharp_outer
            # the whole trajectory; the old part extended by the new sub-tree's nearest
            # state; the new sub-tree extended by the old part's nearest state
            if not (self._no_uturn(sharp_bck, sharp_fwd, rho)
                    and self._no_uturn(sharp_bck if forward else sharp_fwd, sharp_inner,
                                       old_rho + p_inner)
                    and self._no_uturn(old_sharp, sharp_outer, sub_rho + old_end[1])):  # fmt: skip
                break
        theta, grad, lp, p = sample
        self.theta, self.grad, self.lp = theta, grad, lp
        n = max(acc["n_steps"], 1)
        energy = self._hamiltonian(lp, p)
        return {
            "diverging": float(acc["divergent"]),
            "tree_depth": float(depth),
            "n_steps": float(acc["n_steps"]),
            "step_size": abs(eps),
            "acceptance_rate": acc["sum_accept"] / n,
            "energy": energy,
            "energy_error": energy - h0,
            "lp": lp,
        }

    @staticmethod
    def _no_uturn(sharp_a: np.ndarray, sharp_b: np.ndarray, rho: np.ndarray) -> bool:
        return float(sharp_a @ rho) > 0.0 and float(sharp_b @ rho) > 0.0

    def _build(self, start, depth: int, eps: float, h0: float, acc: dict):
        """A sub-tree of ``2**depth`` leapfrog steps from ``start`` (an end of the trajectory).

        Returns None when it diverged or turned back on itself, else ``(edge, proposal,
        log_w, rho, sharp_inner, sharp_outer, p_inner, p_outer)``: the new end state, the
        state drawn from the sub-tree (theta, grad, lp, p), its log weight, its summed
        momenta, and the sharp momenta and momenta at its inner (next to ``start``) and
        outer ends.
        """
        if depth == 0:
            theta, p, grad, lp = self._leapfrog(start[0], start[1], start[2], eps)
            sharp = self.inv_mass @ p
            error = self._hamiltonian(lp, p, sharp) - h0
            acc["n_steps"] += 1
            if not error <= MAX_ENERGY_ERROR:  # also NaN
                acc["divergent"] = True
                return None
            acc["sum_accept"] += 1.0 if error <= 0 else math.exp(-error)
            edge = (theta, p, grad, lp)
            return edge, (theta, grad, lp, p), -error, p, sharp, sharp, p, p
        first = self._build(start, depth - 1, eps, h0, acc)
        if first is None:
            return None
        edge1, prop1, log_w1, rho1, sharp_in1, sharp_out1, p_in1, p_out1 = first
        second = self._build(edge1, depth - 1, eps, h0, acc)
        if second is None:
            return None
        edge2, prop2, log_w2, rho2, sharp_in2, sharp_out2, p_in2, p_out2 = second
        log_w = _logaddexp(log_w1, log_w2)
        # uniform (multinomial) choice within the sub-tree
        proposal = prop2 if self.rng.random() < math.exp(log_w2 - log_w) else prop1
        rho = rho1 + rho2
        if not (self._no_uturn(sharp_in1, sharp_out2, rho)
                and self._no_uturn(sharp_in1, sharp_in2, rho1 + p_in2)
                and self._no_uturn(sharp_out1, sharp_out2, rho2 + p_out1)):  # fmt: skip
            return None
        return edge2, proposal, log_w, rho, sharp_in1, sharp_out2, p_in1, p_out2

    def initial_step_size(self, eps: float) -> float:
        """Stan's heuristic: double or halve ``eps`` until one leapfrog step's acceptance
        probability crosses 0.8."""
        p = self.draw_momentum()
        h0 = self._hamiltonian(self.lp, p)
        direction = 0
        for _ in range(50):
            _, p1, _, lp = self._leapfrog(self.theta, p, self.grad, eps)
            delta = h0 - self._hamiltonian(lp, p1)
            up = delta > math.log(0.8)
            if direction == 0:
                direction = 1 if up else -1
            elif (direction == 1) != up:
                break
            eps = eps * 2.0 if direction == 1 else eps / 2.0
            if not 1e-10 < eps < 1e7:
                break
        return float(np.clip(eps, 1e-10, 1e7))


def _logaddexp(x: float, y: float) -> float:
    """``numpy.logaddexp`` of two floats, the same formula in :mod:`math` (no array call)."""
    d = x - y
    if d > 0:
        return x + math.log1p(math.exp(-d))
    if d <= 0:
        return y + math.log1p(math.exp(d))
    return x + y  # NaN, or infinities of one sign


class _DualAveraging:
    """Hoffman & Gelman's dual averaging of log step size towards ``target`` acceptance."""

    def __init__(self, eps: float, target: float) -> None:
        self.target, self.mu = target, math.log(10.0 * eps)
        self.count, self.s_bar, self.x_bar = 0, 0.0, 0.0
        self.eps = self.eps0 = eps

    def update(self, accept: float) -> float:
        self.count += 1
        eta = 1.0 / (self.count + 10.0)
        self.s_bar = (1.0 - eta) * self.s_bar + eta * (self.target - accept)
        x = self.mu - self.s_bar * math.sqrt(self.count) / 0.05
        weight = self.count**-0.75
        self.x_bar = (1.0 - weight) * self.x_bar + weight * x
        self.eps = math.exp(x)
        return self.eps

    @property
    def final(self) -> float:
        """The tuned step size: the averaged iterate; after fewer than 20 updates (whose
        iterates explore step sizes up to 10x the starting one) no larger than the start."""
        if not self.count:
            return self.eps
        if self.count < MIN_TERMINAL:
            return min(math.exp(self.x_bar), self.eps0)
        return math.exp(self.x_bar)


def _run_chain(f: LogDensity, start: np.ndarray, inv_mass: np.ndarray, draws: int, tune: int,
               seed: np.random.SeedSequence, target_accept: float, max_treedepth: int):  # fmt: skip
    """Tune and sample one chain; returns (theta draws, stats, tuning stats, eps, metric, n_grad)."""
    rng = np.random.default_rng(seed)
    chain = _Chain(f, start, inv_mass, rng, max_treedepth)
    base_cov = chain.inv_mass.copy()
    n = start.size
    eps = chain.initial_step_size(1.0)
    averaging = _DualAveraging(eps, target_accept)
    window_ends = set(tuning_schedule(tune))
    first_window = 75 if tune >= 150 else int(0.15 * tune)
    window: list[np.ndarray] = []
    tuning = {k: np.empty(tune) for k in STAT_NAMES}
    for i in range(tune):
        stats = chain.transition(eps)
        for k, v in stats.items():
            tuning[k][i] = v
        eps = averaging.update(stats["acceptance_rate"])
        if i >= first_window:
            window.append(chain.theta)
        if i in window_ends and len(window) > n + 1:
            sample = np.asarray(window)
            m = len(window)
            cov = np.cov(sample, rowvar=False).reshape(n, n)
            cov = (m / (m + 5.0)) * cov + (5.0 / (m + 5.0)) * base_cov
            try:
                chain.set_metric(cov)
            except np.linalg.LinAlgError:
                pass  # keep the previous metric
            window = []
            eps = chain.initial_step_size(eps)
            averaging = _DualAveraging(eps, target_accept)
    if tune:
        eps = averaging.final
    theta = np.empty((draws, n))
    out = {k: np.empty(draws) for k in STAT_NAMES}
    for i in range(draws):
        stats = chain.transition(eps)
        theta[i] = chain.theta
        for k, v in stats.items():
            out[k][i] = v
    return theta, out, tuning, eps, chain.inv_mass, chain.n_grad


class _Worker:
    """A child process (``python -m clvbayes.nuts``) that runs chains on request.

    A plain subprocess, not :mod:`multiprocessing`: it never re-runs the user's ``__main__``
    (a script without a main guard stays correct) and is safe whatever threads this process
    runs.  It is kept for the next fit (a job run fits two models), so its start-up, ~0.7 s
    of imports, is paid once per process, and :func:`start_workers` lets a caller pay it
    while it does other work.  Jobs and results travel as length-prefixed pickles over its
    stdin and stdout (its own prints go to stderr, which is discarded).
    """

    def __init__(self) -> None:
        import subprocess
        import sys
        import threading

        self.lock = threading.Lock()  # one job at a time (sample() may run in threads)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clvbayes.nuts"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, payload: bytes):
        """Send pickled jobs and wait for their results; None if the child could not run them."""
        import pickle

        try:
            with self.lock:
                self.proc.stdin.write(len(payload).to_bytes(8, "little") + payload)
                self.proc.stdin.flush()
                reply = _read_message(self.proc.stdout)
        except (OSError, ValueError):
            reply = None
        if reply is None:
            self.close()
            return None
        status, results = pickle.loads(reply)
        return results if status == "ok" else None

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()


_WORKERS: list[_Worker] = []


def start_workers(n: int) -> None:
    """Have ``n`` child processes ready for :func:`sample` (started now, in the background)."""
    _WORKERS[:] = [w for w in _WORKERS if w.alive()]
    while len(_WORKERS) < n:
        if not _WORKERS:
            import atexit

            atexit.register(stop_workers)
        _WORKERS.append(_Worker())


def stop_workers() -> None:
    """End the child processes of :func:`start_workers` (also done at exit)."""
    while _WORKERS:
        _WORKERS.pop().close()


def submit(fn, *args):
    """Run ``fn(*args)`` in a worker of :func:`start_workers`, in the background.

    For work that can overlap the caller's (the report's plots while it writes its tables):
    ``fn`` and ``args`` are pickled, so ``fn`` is a module-level function.  Returns ``None``
    when no worker is running (nothing is started here), else a function that waits and
    returns ``(True, value)``, or ``(False, None)`` where the worker could not run it (it
    raised, could not unpickle it or died): the caller then does the work itself, which
    raises any error where the caller can handle it.  Jobs sent to one worker run in turn.
    """
    import pickle
    import threading

    worker = next((w for w in _WORKERS if w.alive()), None)
    if worker is None:
        return None
    try:
        payload = pickle.dumps(("call", fn, args), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None
    box: dict = {}

    def work() -> None:
        box["results"] = worker.run(payload)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def wait():
        thread.join()
        results = box.get("results")
        return (False, None) if results is None else (True, results[0])

    return wait


def _read_message(stream) -> bytes | None:
    header = stream.read(8)
    if len(header) < 8:
        return None
    n = int.from_bytes(header, "little")
    body = stream.read(n)
    return body if len(body) == n else None


def _run_elsewhere(groups: list[list[tuple]]) -> list:
    """Run each group of jobs in its own worker, concurrently with the caller; returns one
    thread-like handle per group whose ``result()`` is the list of results (run here where a
    worker could not: unpicklable jobs, a class it cannot import, a crash)."""
    import pickle
    import threading

    start_workers(len(groups))
    handles = []
    for worker, jobs in zip(_WORKERS, groups, strict=False):
        box: dict = {}
        try:
            payload = pickle.dumps(jobs, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            payload = None

        def work(worker=worker, payload=payload, box=box):
            box["results"] = worker.run(payload) if payload is not None else None

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        handles.append((thread, box, jobs))
    return handles


def _collect(handle) -> list:
    thread, box, jobs = handle
    thread.join()
    results = box.get("results")
    return results if results is not None else [_run_chain(*job) for job in jobs]


def _serve() -> None:
    """The worker's loop: read jobs from stdin, write results to stdout, until stdin closes."""
    import os
    import pickle
    import sys

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the replies
    inp = sys.stdin.buffer
    try:  # the imports a clvbayes job needs, before the first one arrives
        import clvbayes.inference
        import clvbayes.models  # noqa: F401
    except Exception:
        pass
    while True:
        message = _read_message(inp)
        if message is None:  # the caller closed stdin: done. Skip the interpreter's teardown
            out.flush()  # (~0.5 s of module clean-up the caller would wait for); nothing
            os._exit(0)  # here holds unwritten state
        try:
            job = pickle.loads(message)
            if isinstance(job, tuple):  # ("call", fn, args) from submit(); chains: a list
                reply = ("ok", (job[1](*job[2]),))
            else:
                reply = ("ok", [_run_chain(*chain) for chain in job])
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # reported to the caller, which runs the jobs itself
            data = pickle.dumps(("error", repr(exc)), protocol=pickle.HIGHEST_PROTOCOL)
        out.write(len(data).to_bytes(8, "little") + data)
        out.flush()


def sample(
    f: LogDensity,
    starts: Sequence[np.ndarray] | np.ndarray,
    inv_mass: np.ndarray,
    *,
    draws: int = 1000,
    tune: int = 1000,
    seed: int | np.random.SeedSequence | None = None,
    target_accept: float = 0.8,
    max_treedepth: int = 10,
    cores: int = 1,
) -> NutsResult:
    """Draw from the density ``exp(f(theta)[0])`` by NUTS, one chain per start.

    Parameters
    ----------
    f : callable
        ``f(theta) -> (log density, gradient)`` on an unconstrained space (for clvbayes
        models ``theta = log(params)``, Jacobian included); ``-inf`` where undefined.
    starts : array-like, shape (chains, n)
        Starting point of each chain (e.g. draws of the Laplace approximation).
    inv_mass : ndarray, shape (n, n)
        Starting metric: a covariance of ``theta`` (positive definite), refined in tuning.
    draws, tune : int
        Draws kept per chain, and tuning iterations before them (discarded).
    seed : int or numpy.random.SeedSequence, optional
        Seed of every random step; the same seed gives the same draws.
    target_accept : float
        Mean acceptance probability the step size is tuned to, in (0, 1).
    max_treedepth : int
        At most ``2**max_treedepth - 1`` leapfrog steps per draw.
    cores : int
        Processes to run the chains in: this one and ``cores - 1`` worker processes
        (``python -m clvbayes.nuts``, ~0.7 s to start, then kept for later fits; see
        :func:`start_workers`), the chains dealt out in turn.
        ``f`` must be picklable for that; where it is not, or a child fails, its chains run
        here.  Each chain has its own seed from ``seed``, so the draws do not depend on
        ``cores``.

    Returns
    -------
    NutsResult
    """
    starts = np.atleast_2d(np.asarray(starts, dtype=float))
    inv_mass = np.atleast_2d(np.asarray(inv_mass, dtype=float))
    chains, n = starts.shape
    if inv_mass.shape != (n, n):
        raise ValueError(f"inv_mass must have shape ({n}, {n}), got {inv_mass.shape}.")
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}.")
    if int(draws) < 1 or int(tune) < 0 or int(max_treedepth) < 1:
        raise ValueError("draws and max_treedepth must be >= 1 and tune >= 0.")
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    seeds = root.spawn(chains)
    t0 = time.perf_counter()
    jobs = [(f, starts[c], inv_mass, int(draws), int(tune), seeds[c], float(target_accept),
             int(max_treedepth)) for c in range(chains)]  # fmt: skip
    groups = [list(range(chains))[k::max(1, min(int(cores), chains))]
              for k in range(max(1, min(int(cores), chains)))]  # fmt: skip
    results: list = [None] * chains
    handles = _run_elsewhere([[jobs[c] for c in g] for g in groups[1:]]) if groups[1:] else []
    try:
        for c in groups[0]:  # this process runs the first share itself
            results[c] = _run_chain(*jobs[c])
        for group, handle in zip(groups[1:], handles, strict=True):
            for c, result in zip(group, _collect(handle), strict=True):
                results[c] = result
    except BaseException:  # e.g. KeyboardInterrupt: do not leave children sampling
        stop_workers()
        raise
    seconds = time.perf_counter() - t0
    return NutsResult(
        theta=np.stack([r[0] for r in results]),
        stats={k: np.stack([r[1][k] for r in results]) for k in STAT_NAMES},
        tuning_stats={k: np.stack([r[2][k] for r in results]) for k in STAT_NAMES},
        step_size=np.array([r[3] for r in results]),
        inv_mass=np.stack([r[4] for r in results]),
        n_gradients=int(sum(r[5] for r in results)),
        seconds=seconds,
    )


if __name__ == "__main__":  # a worker process of sample(cores > 1)
    _serve()
