"""Atomic file writes: write a temporary file beside the target, then rename over it.

A rename within one directory is atomic on POSIX filesystems (NFS included), so a reader, or a job killed
mid-write, never sees a half-written file under the final name. The data is flushed to disk (``fsync``) before
the rename and the directory after it, so a node that crashes right after the rename cannot leave an empty or
truncated file under the final name either.

The temporary file is created with mode ``0o666`` minus the umask (and the directory's default ACL), like any
file ``open()`` creates: teammates can read a sweep on a shared project directory wherever the umask lets them.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[^.]+\.tmp$")  # what create_temp names: .NAME.XXXX.tmp


def create_temp(target: str | Path) -> Path:
    """A new empty file beside ``target``; unlike ``tempfile.mkstemp`` (always 0600) it honours the umask."""
    target = Path(target)
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # another writer drew the same name: draw again
            continue


def written_file(path: str | Path) -> Path:
    """The file a temporary file of :func:`create_temp` was to become (``path`` itself for any other file),
    so that an error while writing names the file the user knows."""
    path = Path(path)
    m = _TEMP_NAME.match(path.name)
    return path.with_name(m["target"]) if m else path


def unwritable_reason(directory: str | Path) -> str | None:
    """Why this process cannot create files in ``directory`` (which need not exist yet), or None when it can.
    Nothing is created (a dry run writes nothing): the nearest existing folder is checked (a file in the way,
    a read-only filesystem, permissions)."""
    directory = Path(directory)
    existing = next(p for p in (directory, *directory.parents) if os.path.lexists(p))
    if not existing.is_dir():
        return f"{os.strerror(errno.ENOTDIR)} ({existing})"
    if not os.access(existing, os.W_OK | os.X_OK):
        code = errno.EROFS if os.statvfs(existing).f_flag & os.ST_RDONLY else errno.EACCES
        return f"{os.strerror(code)} ({existing})"
    return None


def fsync_path(path: str | Path, directory: bool = False) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as e:
        # some filesystems cannot fsync a directory; the rename itself is still atomic there
        if not (directory and e.errno in (errno.EINVAL, errno.ENOTSUP, errno.EBADF)):
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_target(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write (and close); on success it is flushed and replaces ``target``, on error
    it is removed."""
    target = Path(target)
    tmp = create_temp(target)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
        fsync_path(target.parent, directory=True)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_target(target) as tmp:
        tmp.write_text(text)


def os_error_text(error: OSError) -> str:
    """``FILE: errno text [ECODE]`` for a filesystem error, naming the file being written rather than its
    temporary name (the file is left out when the system call did not say, as for ``write``)."""
    name = error.filename2 or error.filename
    where = ""
    if name is not None:
        where = f"{written_file(os.fsdecode(name))}: "
    code = errno.errorcode.get(error.errno or 0)
    return f"{where}{error.strerror or error}" + (f" [{code}]" if code else "")
