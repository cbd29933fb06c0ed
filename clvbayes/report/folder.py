"""The output folder: what may be replaced, the manifest, staging, publishing, disk space.

The contract: clvbayes never deletes or modifies a file it did not write.  Every report
folder carries a manifest (name, size and SHA-256 of each file in it); a folder is
replaced only if every entry in it is a file the manifest lists, unchanged.  Sibling
folders clvbayes leaves behind after a kill (``.<name>.<hash>.partial-*`` while writing,
``.<name>.<hash>.old-*`` while swapping) are removed by the next run only as far as their
content is provably clvbayes' own (the manifest, or the staging journal that lists every
file before it is written).  The lock that keeps to one writer per folder is in
:mod:`clvbayes.report.lock`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Name of the manifest file in every report folder.
MANIFEST = ".clvbayes-manifest.json"
#: Name of the journal in a folder being written (absent from a published report).
STAGING_JOURNAL = ".clvbayes-staging.json"
_MANIFEST_VERSION = 1
_SHOW = 5  # unexpected entries named in a refusal


class ReportWriteError(OSError):
    """A report folder that could not be written; the message says why and what to do.

    Raised for a full disk, a folder clvbayes will not replace, another run writing the
    same folder, an unwritable location.  The previous report, if any, is unchanged.
    An ``OSError``, so ``clvbayes run`` reports it without a traceback (exit status 2).
    """


class OutputFolderRefused(ReportWriteError, FileExistsError):
    """The output path exists and is not a folder clvbayes may replace."""


class ReportBusy(ReportWriteError):
    """Another clvbayes process is writing the same report folder."""


class ReportWarning(UserWarning):
    """Something about the report folder the user should know (e.g. leftovers kept)."""


def _output_path(out_dir: str | os.PathLike[str]) -> Path:
    """Absolute output path (symlinks not resolved), refusing paths that name no folder."""
    raw = os.fspath(out_dir)
    if not str(raw).strip():
        raise OutputFolderRefused(
            "the output folder name is empty; give a folder name, e.g. --output clvbayes-report."
        )
    out = Path(os.path.abspath(raw))
    if out.name in ("", ".", "..") or out == out.parent:
        raise OutputFolderRefused(
            f"{raw!r} names the file-system root, not a folder clvbayes can replace; give a "
            "new folder name, e.g. --output clvbayes-report."
        )
    cwd = Path.cwd()
    if out == cwd or out in cwd.parents:
        raise OutputFolderRefused(
            f"{raw!r} is the current folder (or holds it); a report replaces its output folder, "
            "so give a new folder name, e.g. --output clvbayes-report."
        )
    return out


def _sibling_prefix(out: Path) -> str:
    """Prefix of the sibling lock/staging names: readable, bounded in length, unique per name."""
    digest = hashlib.sha256(out.name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f".{out.name[:40]}.{digest}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _manifest_files(folder: Path) -> dict[str, dict[str, Any]] | None:
    """The manifest's ``{name: {"size", "sha256"}}``, or None without a readable manifest."""
    m = _read_json(folder / MANIFEST)
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        return None
    files = m["files"]
    ok = all(
        isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
        for v in files.values()
    )
    return files if ok else None


def manifest_problems(folder: Path, expected: list[str]) -> list[str]:
    """The validators' file check: each ``expected`` file is in the manifest, and no file the
    manifest lists changed since clvbayes wrote it (nothing to check without a manifest:
    reports from clvbayes versions before it)."""
    manifest = _manifest_files(folder)
    if manifest is None:
        return []
    problems = [f"{f} is not in the manifest" for f in expected if f not in manifest]
    for name, spec in manifest.items():
        p = folder / name
        if p.is_file() and (p.stat().st_size != spec["size"] or _sha256(p) != spec["sha256"]):
            problems.append(f"{name} changed since clvbayes wrote it (manifest: {MANIFEST})")
    return problems


def _entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted(it, key=lambda e: e.name)


def _unexpected(folder: Path, files: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Entries of ``folder`` that are not unchanged manifest files, described."""
    found = []
    for e in _entries(folder):
        if e.name == MANIFEST:
            continue
        spec = files.get(e.name)
        if e.is_symlink():
            found.append(f"{e.name} (a link)")
        elif e.is_dir():
            found.append(f"{e.name}/ (a folder)")
        elif not e.is_file():
            found.append(f"{e.name} (not a regular file)")
        elif spec is None:
            found.append(f"{e.name} (not written by clvbayes)")
        elif e.stat().st_size != spec["size"] or _sha256(Path(e.path)) != spec["sha256"]:
            found.append(f"{e.name} (changed since clvbayes wrote it)")
    return found


def _listing(items: Sequence[str]) -> str:
    more = f" and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def replace_refusal(
    out_dir: str | os.PathLike[str], protect: Iterable[str | os.PathLike[str]] = ()
) -> str | None:
    """Why ``out_dir`` may not be (re)placed by a report, or None when it may.

    A path may be written when it does not exist, is an empty folder, or is a report
    folder whose every entry is listed, unchanged, in its manifest (:data:`MANIFEST`).
    Anything else is refused: a file, a link, a folder with other content (the reason
    names the first entries), a report from a clvbayes that wrote no manifest.

    Parameters
    ----------
    out_dir : path
        The report folder.
    protect : paths
        Files the run reads (its inputs): refused when one of them is ``out_dir`` or lies
        inside it.

    Returns
    -------
    str or None
        A one-paragraph message (what, where, the fix), or None.
    """
    out = _output_path(out_dir)
    fix = "choose another --output (a new folder name), or move away what you want to keep"
    for p in protect:
        p = Path(os.path.abspath(os.fspath(p)))
        if p == out or out in p.parents:
            return (
                f"output folder {out} holds the input file {p}; a report replaces its folder, so "
                "write it elsewhere: choose another --output outside the input's folder."
            )
    if not os.path.lexists(out):
        return None
    if out.is_symlink():
        return (
            f"output {out} is a symbolic link (to {os.readlink(out)}); clvbayes replaces "
            "report folders, not links: give the link's target folder as --output, or a new "
            "folder name."
        )
    if not out.is_dir():
        return (
            f"output {out} is a file, not a folder; clvbayes writes a report folder and does "
            "not overwrite files: give a new folder name as --output."
        )
    try:
        entries = _entries(out)
    except OSError as err:
        return f"output folder {out} cannot be listed ({_os_text(err)}); {fix}."
    if not entries:
        return None
    files = _manifest_files(out)
    if files is None:
        names = [e.name + ("/" if e.is_dir() else "") for e in entries]
        summary = _read_json(out / "model_summary.json")
        if isinstance(summary, dict) and "clvbayes_report" in summary:
            return (
                f"output folder {out} holds a report written by an older clvbayes, without the "
                f"manifest ({MANIFEST}) that proves which files clvbayes wrote, so it is not "
                f"replaced (it holds {_listing(names)}); remove the folder yourself once "
                f"nothing in it is yours to keep, or {fix}."
            )
        return (
            f"output folder {out} exists and is not a clvbayes report folder (it holds "
            f"{_listing(names)}); clvbayes replaces only folders it wrote: {fix}."
        )
    try:
        extra = _unexpected(out, files)
    except OSError as err:
        return f"output folder {out} cannot be checked ({_os_text(err)}); {fix}."
    if extra:
        return (
            f"output folder {out} is a clvbayes report but also holds {len(extra)} entr"
            f"{'y' if len(extra) == 1 else 'ies'} clvbayes did not write or that changed: "
            f"{_listing(extra)}; replacing the folder would delete "
            f"{'it' if len(extra) == 1 else 'them'}: {fix}."
        )
    return None


def check_output_folder(
    out_dir: str | os.PathLike[str], protect: Iterable[str | os.PathLike[str]] = ()
) -> None:
    """Raise :class:`OutputFolderRefused` when :func:`replace_refusal` gives a reason."""
    reason = replace_refusal(out_dir, protect)
    if reason is not None:
        raise OutputFolderRefused(reason)


def _is_replaceable(out: Path) -> bool:
    """True when a report may be written to ``out`` (see :func:`replace_refusal`)."""
    try:
        return replace_refusal(out) is None
    except OutputFolderRefused:
        return False


def _os_text(err: OSError) -> str:
    text = err.strerror or str(err)
    return f"{text}: {err.filename}" if err.filename else text


# --- staging, leftovers and publishing ---------------------------------------------------


class _Stage:
    """The folder a report is written into before it is published.

    Every file name is recorded in the journal (:data:`STAGING_JOURNAL`) before the file
    is written, so a later run can prove that everything in a leftover staging folder is
    clvbayes' own.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = Path(
            tempfile.mkdtemp(prefix=f"{_sibling_prefix(out)}.partial-", dir=out.parent)
        )
        umask = os.umask(0)
        os.umask(umask)
        self.path.chmod(0o777 & ~umask)  # mkdtemp makes it private; a report folder is not
        self.names: list[str] = []
        try:
            self._journal()
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)  # created a moment ago, empty
            raise

    def _journal(self) -> None:
        data = {"clvbayes_staging": 1, "pid": os.getpid(), "output": str(self.out),
                "files": self.names}  # fmt: skip
        (self.path / STAGING_JOURNAL).write_text(json.dumps(data), encoding="utf-8")

    def expect(self, *names: str) -> None:
        new = [n for n in names if n not in self.names]
        if new:
            self.names += new
            self._journal()

    def seal(self) -> dict[str, dict[str, Any]]:
        """Write the manifest of every file and drop the journal; returns the manifest files."""
        from clvbayes import __version__

        files = {}
        for e in _entries(self.path):
            if e.name in (STAGING_JOURNAL, MANIFEST):
                continue
            p = Path(e.path)
            files[e.name] = {"size": p.stat().st_size, "sha256": _sha256(p)}
            _fsync_file(p)
        manifest = {
            "clvbayes_manifest": _MANIFEST_VERSION,
            "clvbayes_version": __version__,
            "note": "Every file clvbayes wrote in this folder.  clvbayes replaces this folder "
            "only while it holds nothing else and nothing here has changed.",
            "files": files,
        }
        (self.path / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        _fsync_file(self.path / MANIFEST)
        (self.path / STAGING_JOURNAL).unlink()
        _fsync_dir(self.path)
        return files

    def discard(self) -> None:
        _remove_proven(self.path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/file system syncs folders
        _fsync_file(path)


def _remove_proven(folder: Path) -> list[str]:
    """Delete what provably clvbayes wrote in ``folder`` (then the folder if empty).

    Proof is the manifest (file listed, same size and SHA-256) or the staging journal (file
    listed before it was written).  Returns the entries left in place.
    """
    if not folder.is_dir() or folder.is_symlink():
        return [folder.name]
    files = _manifest_files(folder) or {}
    journal = _read_json(folder / STAGING_JOURNAL)
    journaled = set()
    if isinstance(journal, dict) and isinstance(journal.get("files"), list):
        journaled = {n for n in journal["files"] if isinstance(n, str)}
    kept = []
    for e in _entries(folder):
        if e.name in (MANIFEST, STAGING_JOURNAL) or e.is_symlink() or not e.is_file():
            if not (e.name in (MANIFEST, STAGING_JOURNAL) and e.is_file()):
                kept.append(e.name)
            continue
        p = Path(e.path)
        spec = files.get(e.name)
        ours = e.name in journaled or (
            spec is not None and p.stat().st_size == spec["size"] and _sha256(p) == spec["sha256"]
        )
        if ours:
            p.unlink()
        else:
            kept.append(e.name)
    if kept:
        return kept
    for name in (MANIFEST, STAGING_JOURNAL):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    try:
        folder.rmdir()
    except OSError:
        return [e.name for e in _entries(folder)]
    return []


def _leftovers(out: Path) -> list[Path]:
    prefix = _sibling_prefix(out)
    try:
        entries = _entries(out.parent)
    except OSError:
        return []
    return [
        Path(e.path)
        for e in entries
        if e.name.startswith((f"{prefix}.partial-", f"{prefix}.old-"))
        and e.is_dir(follow_symlinks=False)
    ]


def _recover(out: Path) -> None:
    """Tidy what an interrupted earlier run left next to ``out`` (hold the lock first).

    A previous report moved aside and not put back (a crash between the two renames of the
    fallback publish) is restored when ``out`` is missing; staging folders and old reports
    are then removed as far as their content is provably clvbayes' own; anything else is
    kept and named in a :class:`ReportWarning`.
    """
    found = _leftovers(out)
    if not os.path.lexists(out):
        old = [p for p in found if ".old-" in p.name and _manifest_files(p) is not None
               and not _unexpected(p, _manifest_files(p) or {})]  # fmt: skip
        if old:
            newest = max(old, key=lambda p: p.stat().st_mtime)
            os.rename(newest, out)
            found.remove(newest)
            warnings.warn(
                f"restored the previous report {out} from {newest.name}, left by an interrupted "
                "clvbayes run.",
                ReportWarning,
                stacklevel=3,
            )
    for p in found:
        try:
            kept = _remove_proven(p)
        except OSError:
            kept = ["?"]
        if kept:
            warnings.warn(
                f"{p} was left by an interrupted clvbayes run but holds entries clvbayes cannot "
                f"prove it wrote ({_listing(kept)}); it was kept: delete it yourself when "
                "nothing in it is yours.",
                ReportWarning,
                stacklevel=3,
            )


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two folders (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    if sys.platform != "linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder into place, replacing an old report (hold the lock).

    With ``renameat2(RENAME_EXCHANGE)`` the swap is one atomic step: at every moment
    ``out`` is either the old report or the new one.  Elsewhere the old report is first
    renamed aside (``.<name>.<hash>.old-*``); a crash before the second rename leaves it
    there, and the next run puts it back (:func:`_recover`).  The old report's files are
    then removed as far as the manifest proves them clvbayes' own.
    """
    if not os.path.lexists(out):
        os.rename(tmp, out)
        _fsync_dir(out.parent)
        return
    if _exchange(tmp, out):
        _fsync_dir(out.parent)
        old = tmp
    else:
        old = Path(tempfile.mkdtemp(prefix=f"{_sibling_prefix(out)}.old-", dir=out.parent))
        old.rmdir()
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        _fsync_dir(out.parent)
    try:  # the new report is in place: a failure from here on is only a leftover
        kept = _remove_proven(old)
    except OSError as err:
        kept = [f"? ({_os_text(err)})"]
    if kept:
        warnings.warn(
            f"the previous report, moved to {old}, gained entries while this report was written "
            f"({_listing(kept)}); they were kept there.",
            ReportWarning,
            stacklevel=3,
        )


# --- disk space ---------------------------------------------------------------------------

_CSV_BYTES = {"f": 23, "i": 21, "u": 21, "b": 6, "M": 27}  # widest text of one value, bytes


def _table_bytes(df: pd.DataFrame, formats: Sequence[str]) -> int:
    n = 0
    for c in df.columns:
        s = df[c]
        kind = s.dtype.kind if isinstance(s.dtype, np.dtype) else "O"
        if kind in _CSV_BYTES:
            n += _CSV_BYTES[kind] * len(s)
        else:
            n += int(s.astype(object).map(lambda v: len(str(v)) + 3).sum())
    return int(n * len(formats))


def _model_bytes(model: Any) -> int:
    """Generous estimate of a saved model's size: posterior, data and ids, twice over."""
    draws = getattr(model, "draws", None)
    n = sum(int(np.asarray(v).nbytes) for v in draws().values()) if callable(draws) else 0
    stats = getattr(model, "sample_stats_", None)
    if stats is not None:
        n += int(stats.nbytes)
    data = getattr(model, "data_", None)
    if data is not None:
        for attr in ("counts", "inverse"):
            n += int(np.asarray(getattr(data, attr, [])).nbytes)
        with contextlib.suppress(Exception):
            n += sum(int(np.asarray(data[c]).nbytes) for c in data.columns)
        ids = getattr(data, "customer_ids", None)
        if ids is not None:
            n += int(pd.Series(ids).astype(str).str.len().sum()) + 24 * len(ids)
    return 2 * n + (1 << 20)


def _check_space(out: Path, need: int) -> None:
    """Refuse before writing anything when the file system has clearly too little room."""
    try:
        free = shutil.disk_usage(out.parent).free
    except OSError:
        return
    if free < need:
        err = ReportWriteError(
            f"not enough free space to write the report to {out}: it needs about "
            f"{need / 1e6:,.1f} MB and the file system holding {out.parent} has "
            f"{free / 1e6:,.1f} MB free.  Free some space or choose an --output on another disk; "
            "nothing was written and any previous report there is unchanged."
        )
        err.errno = errno.ENOSPC
        raise err


def staged_writing(stage):
    """``writing(*names)``: a context manager that names the files in ``stage``'s journal
    before they are written and turns an ``OSError`` into a :class:`ReportWriteError` naming
    them and the report folder."""

    @contextlib.contextmanager
    def writing(*names: str):
        stage.expect(*names)
        try:
            yield
        except ReportWriteError:
            raise
        except OSError as err:
            raise _write_failed(stage.out, ", ".join(names), err) from err

    return writing


def _write_failed(out: Path, what: str, err: BaseException) -> ReportWriteError:
    text = _os_text(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
    code = getattr(err, "errno", None)
    if code is None and ("errno = 28" in str(err) or "No space left" in str(err)):
        code = errno.ENOSPC
    hint = (
        "the disk is full: free some space or choose an --output on another disk"
        if code in (errno.ENOSPC, errno.EDQUOT)
        else "check the disk and permissions, or choose another --output"
    )
    new = ReportWriteError(
        f"cannot write the report to {out}: writing {what} failed ({text.splitlines()[0]}); "
        f"{hint}.  Nothing was published; any previous report there is unchanged."
    )
    new.errno = code
    return new
