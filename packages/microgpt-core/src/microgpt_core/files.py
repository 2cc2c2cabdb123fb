"""Writing files so that a crash, a kill -9 or a full disk never leaves a half-written one in place.

    write_atomic(path, data)      data -> a new temporary file beside `path`, flushed to disk,
                                  then renamed over `path` (readers see the old bytes or the new)
    replace_folder(staged, final) a finished folder swapped in for `final` in one step: on Linux
                                  renameat2(RENAME_EXCHANGE), so `final` is never missing; elsewhere
                                  two renames, and an interrupted swap is repaired by the next call

Files get the permissions a plain `open(path, "w")` would give (0o666 less the umask), never the
0o600 of `tempfile.mkstemp`: another user can read a shared model. `is_disk_full(err)` tells a full
disk (ENOSPC, EDQUOT) apart from other write errors, so commands can say so in one line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
from pathlib import Path

__all__ = [
    "DiskFullError",
    "fsync_folder",
    "is_disk_full",
    "replace_folder",
    "restore_folder",
    "write_atomic",
]

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(OSError):
    """A write failed for want of space (or quota); the message says what was being written and what
    was kept intact."""


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` (or an error it was raised from) is "no space left on device" or a full quota."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DiskFullError) or (isinstance(err, OSError) and err.errno in _DISK_FULL):
            return True
        if "No space left on device" in str(err) or "Disk quota exceeded" in str(err):
            return True  # libraries (tensorstore) that report errno as text
        err = err.__cause__ or err.__context__
    return False


def write_temp(path: str | os.PathLike[str], data: bytes) -> Path:
    """Writes `data` to a new temporary file beside `path`, flushed to disk; returns its path (rename
    it over `path` to finish, as `write_atomic` does). Nothing is left behind on failure."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never reuse a name; mode 0o666 less the umask, as a plain open() would give.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Writes `data` to `path` through a temporary file in the same folder and a rename.

    The folder must exist. On any failure (a full disk included) the temporary file is removed and
    an existing `path` keeps its old content.
    """
    path = Path(path)
    temp = write_temp(path, data)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def fsync_folder(directory: str | os.PathLike[str]) -> None:
    """Makes renames inside `directory` durable where the platform allows it (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two existing paths (Linux renameat2); False where the OS cannot."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.ENOTSUP):
        return False  # a file system without exchange: fall back to two renames
    raise OSError(code, os.strerror(code), str(a))


def replace_folder(staged: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Puts the complete folder `staged` in place of `final` (which may not exist yet).

    `final` always names a whole folder, the old one or the new one: on Linux the two are exchanged
    in one system call and the old one is then deleted. Where the OS has no exchange, the old folder
    is first renamed to ``.<name>.old`` and a later call (or `restore_folder`) puts it back if the
    process died in between.
    """
    staged, final = Path(staged), Path(final)
    restore_folder(final)
    if not final.exists():
        os.replace(staged, final)
    elif _exchange(staged, final):
        shutil.rmtree(staged)  # now the old folder
    else:
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old)
    fsync_folder(final.parent)
    return final


def restore_folder(final: str | os.PathLike[str]) -> None:
    """Undoes a two-rename swap that was cut off between its renames (see `replace_folder`)."""
    final = Path(final)
    old = final.with_name(f".{final.name}.old")
    if old.is_dir() and not final.exists():
        os.replace(old, final)
    elif old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
