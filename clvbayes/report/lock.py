"""The lock: one writer per report folder (an exclusive ``flock`` on a sibling file)."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clvbayes.report.folder import (
    ReportBusy,
    ReportWriteError,
    _check_space,
    _os_text,
    _output_path,
    _publish,
    _read_json,
    _recover,
    _sibling_prefix,
    _Stage,
    _write_failed,
    check_output_folder,
)

_HELD: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth), this process's locks
try:
    import fcntl as _fcntl  # noqa: F401

    _HAVE_FLOCK = True
except ImportError:  # pragma: no cover - Windows
    _HAVE_FLOCK = False


def _lock_path(out: Path) -> Path:
    return out.parent / f"{_sibling_prefix(out)}.lock"


@contextlib.contextmanager
def output_lock(out_dir: str | os.PathLike[str]):
    """Hold the report folder's lock: a second writer of the same folder is refused.

    The lock is an exclusive ``flock`` on a sibling file (``.<name>.<hash>.lock``), taken
    without waiting; it is released by the kernel when the process dies (also by kill -9),
    and the file is removed on release.  Re-entrant within one process, so ``clvbayes run``
    can hold it from its first check to the end of :func:`write_report`.

    Raises
    ------
    ReportBusy
        Another process holds the lock (the message names its pid and start time).
    ReportWriteError
        The lock file cannot be created (e.g. a read-only parent folder).
    """
    out = _output_path(out_dir)
    path = _lock_path(out)
    key = str(path)
    if key in _HELD:
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
        try:
            yield out
        finally:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth - 1)
        return
    fd = _acquire(path, out)
    _HELD[key] = (fd, 1)
    try:
        yield out
    finally:
        del _HELD[key]
        if _HAVE_FLOCK:
            with contextlib.suppress(OSError):
                os.unlink(path)  # while still holding it: no one else can hold this inode
            os.close(fd)
        else:  # the file is the lock: close, then remove (Windows cannot remove open files)
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)


def _acquire(path: Path, out: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportWriteError(
            f"cannot write the report to {out}: cannot create its parent folder "
            f"({_os_text(err)}); choose another --output."
        ) from err
    if _HAVE_FLOCK:
        import fcntl
    else:  # not POSIX (Windows): an exclusively created file is the lock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise ReportBusy(
                f"another clvbayes run is writing the report {out} (lock file {path}); wait for "
                "it to finish or choose another --output.  If no clvbayes run is active, the "
                "lock was left by a crash: delete the lock file."
            ) from None
        except OSError as err:
            raise ReportWriteError(
                f"cannot write the report to {out}: cannot create a file in {out.parent} "
                f"({_os_text(err)}); choose an --output in a folder you can write to."
            ) from err
        return fd
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as err:
            raise ReportWriteError(
                f"cannot write the report to {out}: cannot create a file in {out.parent} "
                f"({_os_text(err)}); choose an --output in a folder you can write to."
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_json(path) or {}
            os.close(fd)
            raise ReportBusy(
                f"another clvbayes run (pid {holder.get('pid', '?')}, started "
                f"{holder.get('started_utc', '?')}) is writing the report {out}; wait for it to "
                "finish, or choose another --output.  (Lock file: "
                f"{path}.)"
            ) from None
        # the file we locked may have been unlinked by its previous holder: retry then
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            info = {"pid": os.getpid(), "started_utc": datetime.now(UTC).isoformat("T", "seconds"),
                    "output": str(out)}  # fmt: skip
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
            return fd
        os.close(fd)
    raise ReportBusy(f"cannot take the lock {path} for {out}; retry.")


def publish_staged(out: Path, protect: Any, need: int, fill, validate) -> Path:
    """Write a report folder the safe way: under the lock, in a staging folder, then swapped in.

    Under :func:`output_lock`: recover an interrupted swap, refuse a folder clvbayes did not
    write (``protect``), check ``need`` bytes of free space, ``fill(stage)`` a staging folder,
    seal it, ``validate(path)`` it, check the output folder again (nothing may have appeared
    meanwhile) and swap it into place.  On any failure the staging folder is discarded and the
    previous report is unchanged.
    """
    with output_lock(out):
        _recover(out)
        check_output_folder(out, protect)
        _check_space(out, need)
        try:
            stage = _Stage(out)
        except OSError as err:
            raise _write_failed(out, f"a staging folder in {out.parent}", err) from err
        try:
            fill(stage)
            stage.seal()
            validate(stage.path)
            check_output_folder(out, protect)  # again: nothing may have appeared meanwhile
            try:
                _publish(stage.path, out)
            except OSError as err:
                raise _write_failed(out, "the finished report into place", err) from err
        except BaseException:
            with contextlib.suppress(OSError):
                stage.discard()
            raise
    return out
