"""Writing result files safely: never over anything but a regular file the user asked to replace.

:func:`check_target` runs before any long work (so a bad path fails at once) and
:func:`write_atomically` at the end: the content goes to a temporary file beside the target, which
replaces the target in one ``os.replace`` only after the target is checked again.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


def check_target(path, *, overwrite: bool = False) -> Path:
    """The output ``path`` after checking that writing there is allowed and possible.

    Refused: an empty path; a symlink, directory, FIFO, device or socket at the path; an existing
    regular file unless ``overwrite``; a parent that is missing, not a directory or not writable.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise ValueError(f"The output path must be a non-empty file name. Got {path!r} instead.")
    target = Path(os.fspath(path)).expanduser()
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        info = None
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            raise ValueError(f"Refusing to write to '{target}': it is a symbolic link; name the real file instead.")
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"Refusing to write to '{target}': it is a {_kind(info.st_mode)}, not a regular file.")
        if not overwrite:
            raise FileExistsError(f"'{target}' exists; pass --overwrite (overwrite=True) to replace it.")
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"Cannot write '{target}': the directory '{parent}' does not exist.")
    try:  # a real probe, named as the temporary file will be: os.access says yes to root on read-only
        # file systems, and a name too long for the file system shows only when a file is made
        with tempfile.NamedTemporaryFile(dir=parent, **_temporary_name(target)):
            pass
    except OSError as exc:
        raise PermissionError(f"Cannot write '{target.name}' in the directory '{parent}': {exc.strerror or exc}.") from None
    return target


def _temporary_name(target: Path) -> dict:
    """The prefix and suffix of the temporary file written beside ``target``."""
    return {"prefix": f".{target.name}.", "suffix": ".partial"}


def write_atomically(path, write, *, overwrite: bool = False) -> int:
    """Call ``write(temporary_path)`` then move the file to ``path``; return its size in bytes.

    An existing regular file (allowed by ``overwrite``) keeps its permission bits; a new file gets
    the usual ones (0666 less the umask). Nothing is left behind when ``write`` fails.
    """
    target = check_target(path, overwrite=overwrite)
    handle, temporary = tempfile.mkstemp(dir=target.parent, **_temporary_name(target))
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        check_target(target, overwrite=overwrite)  # again: the path may have changed meanwhile
        os.chmod(temporary, _mode_for(target))
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return os.path.getsize(target)


def _mode_for(target: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")
