"""This server's private temporary folder (uploads, Trade-offs checkpoints), removed when it exits."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_folder: Path | None = None


def scratch_folder(name: str) -> Path:
    """The subfolder ``name`` of this server's own folder: made by ``mkdtemp`` (private, so nobody
    can plant a link there) on first use and removed with everything in it when the server exits,
    so that sessions do not leave their files behind."""
    global _folder
    if _folder is None or not _folder.is_dir():
        _folder = Path(tempfile.mkdtemp(prefix="dsf-app-"))
        atexit.register(shutil.rmtree, _folder, True)
    folder = _folder / name
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder
