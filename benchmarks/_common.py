"""Helpers shared by the benchmark scripts: timing, peak memory, fresh child processes, results.

Standard library only (``psutil`` is used when installed), so that a benchmark child process
can import it from any interpreter, including a separate virtual environment holding the
peer libraries.

Peak memory
-----------
Two figures, both in MiB:

* ``peak_rss_mb``: the largest *sum* of the resident set sizes of a process and all its
  descendants, sampled every ``interval`` seconds with ``psutil`` (what the machine must
  hold at once, e.g. PyMC's parallel chain workers plus the main process).  A very short
  peak between two samples can be missed.
* ``max_rss_mb``: the kernel's high-water mark ``ru_maxrss`` of the largest *single*
  process (``os.wait4`` for a child, ``getrusage`` otherwise).  Exact, but it does not add
  up concurrent processes.  Without ``psutil`` only this one is available.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULT_ENV = "CLVBAYES_BENCH_RESULT"
"""Environment variable naming the JSON file a child process writes its result to."""

try:  # optional: summed RSS of a process tree
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

_MAXRSS_TO_MB = 1 / (1024 * 1024) if sys.platform == "darwin" else 1 / 1024  # bytes vs KiB


# ------------------------------------------------------------------------------------------
# machine and load
# ------------------------------------------------------------------------------------------
def load_average() -> tuple[float, float, float]:
    """System load average over 1, 5 and 15 minutes (NaN where unavailable)."""
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover - Windows
        return (math.nan, math.nan, math.nan)


def machine_info(packages: Sequence[str] = ()) -> dict[str, str]:
    """Machine, Python, load and package versions, for the header of a results file."""
    from importlib import metadata

    load = load_average()
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} logical CPUs",
        "python": platform.python_version(),
        "load average (1/5/15 min) at start": "/".join(f"{v:.2f}" for v in load),
    }
    for name in packages:
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    return info


# ------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------
def _tree_rss_bytes(proc) -> int:
    """Sum of the RSS of ``proc`` and its live descendants (bytes); 0 once it is gone."""
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def max_rss_self_mb() -> float:
    """High-water RSS (MiB) of this process and, separately, of its largest waited-for child."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) * _MAXRSS_TO_MB


class Meter:
    """Per-stage wall time and peak memory of this process (and its children).

    A background thread samples the summed RSS of the process tree every ``interval``
    seconds (needs ``psutil``; without it ``peak_rss_mb`` is the ``ru_maxrss`` high-water
    mark, which cannot be reset between stages and so is cumulative).  Stages named in
    ``profile`` (stage name -> output path) also run under cProfile; the report (cumulative
    time, lines matching the regular expression ``profile_filter``) is written to the path.

    Examples
    --------
    >>> meter = Meter()
    >>> with meter.stage("work"):
    ...     _ = sum(range(10))
    >>> sorted(meter.stages["work"])
    ['peak_rss_mb', 'seconds']
    """

    def __init__(
        self,
        interval: float = 0.02,
        profile: dict[str, str] | None = None,
        profile_filter: str | None = None,
    ) -> None:
        self.interval = interval
        self.profile = dict(profile or {})
        self.profile_filter = profile_filter
        self.stages: dict[str, dict[str, float]] = {}
        #: Called after each stage (e.g. to save the stages so far for a parent that may
        #: stop this process at a time limit)
        self.after_stage: Callable[[], None] | None = None
        self._stage_peak = 0
        self._overall_peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proc = psutil.Process() if psutil is not None else None
        if self._proc is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        rss = _tree_rss_bytes(self._proc)
        with self._lock:
            self._stage_peak = max(self._stage_peak, rss)
            self._overall_peak = max(self._overall_peak, rss)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block and record its peak RSS under ``stages[name]``."""
        if self._proc is not None:
            with self._lock:
                self._stage_peak = 0
            self._sample()
        prof = None
        if name in self.profile:
            import cProfile

            prof = cProfile.Profile()
        t0 = time.perf_counter()
        try:
            if prof is not None:
                prof.enable()
            yield
        finally:
            seconds = time.perf_counter() - t0
            if prof is not None:
                prof.disable()
                self._write_profile(prof, self.profile[name])
            if self._proc is not None:
                self._sample()
                peak = self._stage_peak / 2**20
            else:
                peak = max_rss_self_mb()
            self.stages[name] = {"seconds": seconds, "peak_rss_mb": peak}
            if self.after_stage is not None:
                self.after_stage()

    def _write_profile(self, prof, path: str) -> None:
        import io
        import pstats

        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf).sort_stats("cumulative")
        restrictions = [self.profile_filter] if self.profile_filter else []
        stats.print_stats(*restrictions, 30)
        Path(path).write_text(buf.getvalue())

    @property
    def peak_rss_mb(self) -> float:
        """Peak summed RSS (MiB) since the meter started."""
        if self._proc is None:
            return max_rss_self_mb()
        self._sample()
        return self._overall_peak / 2**20

    def close(self) -> None:
        self._stop.set()


# ------------------------------------------------------------------------------------------
# child processes
# ------------------------------------------------------------------------------------------
@dataclass
class ChildResult:
    """Outcome of :func:`run_child`.

    Attributes
    ----------
    returncode : int
        Exit status (negative: killed by that signal; ``timed_out`` tells a timeout).
    wall_seconds : float
        Wall time from start to exit, imports included.
    peak_rss_mb, max_rss_mb : float
        See the module docstring (NaN where not measurable).
    payload : dict
        The JSON the child wrote with :func:`write_result` (empty if none).
    stdout, stderr : str
        The last 4,000 characters of each.
    timed_out : bool
    """

    returncode: int
    wall_seconds: float
    peak_rss_mb: float
    max_rss_mb: float
    payload: dict[str, Any] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def error(self) -> str:
        """One line saying why the child failed (last line of its stderr)."""
        if self.timed_out:
            return f"timed out after {self.wall_seconds:.0f} s"
        lines = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        return lines[-1][:300] if lines else f"exit status {self.returncode}"


def run_child(
    argv: Sequence[str],
    *,
    timeout: float = 1800.0,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    interval: float = 0.05,
) -> ChildResult:
    """Run ``argv`` in a fresh process; measure wall time and peak memory of its process tree.

    The child finds the path of its result file in the environment variable
    :data:`RESULT_ENV` and may write a JSON object there (:func:`write_result`).

    Parameters
    ----------
    argv : sequence of str
        Command line (e.g. ``[sys.executable, "script.py", ...]``).
    timeout : float
        Seconds after which the child's process group is killed.
    env : dict, optional
        Environment (default: a copy of this one).
    cwd : path, optional
        Working directory.
    interval : float
        Seconds between memory samples.
    """
    import signal
    import tempfile

    env = dict(os.environ if env is None else env)
    with tempfile.TemporaryDirectory(prefix="clvbayes-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        env[RESULT_ENV] = str(result_path)
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                list(argv), stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True
            )
            ps = psutil.Process(proc.pid) if psutil is not None else None
            peak, timed_out, usage, status = 0, False, None, 0
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if ps is not None:
                    peak = max(peak, _tree_rss_bytes(ps))
                if time.perf_counter() - t0 > timeout:
                    timed_out = True
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(interval)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
        payload = json.loads(result_path.read_text()) if result_path.exists() else {}
        stdout = out_path.read_text(errors="replace")[-4000:]
        stderr = err_path.read_text(errors="replace")[-4000:]
    max_rss = usage.ru_maxrss * _MAXRSS_TO_MB if usage is not None else math.nan
    return ChildResult(
        returncode=proc.returncode,
        wall_seconds=wall,
        peak_rss_mb=peak / 2**20 if ps is not None else math.nan,
        max_rss_mb=max_rss,
        payload=payload,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
    )


def write_result(payload: dict[str, Any]) -> None:
    """In a child started by :func:`run_child`: write ``payload`` (JSON) for the parent.

    Outside such a child (no :data:`RESULT_ENV`), print it instead.
    """
    text = json.dumps(payload, default=_json_default, indent=1)
    path = os.environ.get(RESULT_ENV)
    if path:
        Path(path).write_text(text)
    else:
        print(text)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# ------------------------------------------------------------------------------------------
# results: markdown and CSV
# ------------------------------------------------------------------------------------------
def format_value(value: Any, digits: int = 3) -> str:
    """A table cell: ``digits`` significant digits for floats (thousands separated), '' for None/NaN."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == 0:
            return "0"
        if abs(value) >= 10**digits:
            return f"{value:,.0f}"
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
        return f"{value:.{decimals}f}"
    try:  # numpy scalars
        return format_value(value.item(), digits)
    except AttributeError:
        return str(value)


def markdown_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, digits: int = 3
) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (dicts), numbers right-aligned."""
    if not rows:
        return "_(no rows)_\n"
    columns = list(columns or rows[0].keys())
    cells = [[format_value(r.get(c), digits) for c in columns] for r in rows]
    numeric = [
        all(isinstance(r.get(c), int | float) or r.get(c) is None for r in rows) for c in columns
    ]
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"
    body = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join([head, rule, *body]) + "\n"


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts; the union of their keys, first-seen order) to a CSV file."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with Path(path).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv_cell(r.get(k)) for k in columns})


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if hasattr(value, "item"):
        return value.item()
    return value


def info_block(info: dict[str, str]) -> str:
    """The machine/version header of a results file, as a markdown list."""
    return "\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n"


def resolve_out(out: str | None, smoke: bool) -> Path:
    """Folder for results: ``out``; else ``benchmarks/results`` (full runs) or a new temporary
    folder (smoke runs, so that tiny runs never overwrite real results)."""
    import tempfile

    if out:
        path = Path(out)
    elif smoke:
        path = Path(tempfile.mkdtemp(prefix="clvbayes-bench-smoke-"))
    else:
        path = RESULTS_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path
