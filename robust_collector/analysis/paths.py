"""Where the notebooks write: the repository root, and a fresh private temp folder when
``RC_TMP=1`` asks for a short throwaway run (the test suite sets it explicitly)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

Pathish = str | Path
"""A file or folder path; for a database also a ``postgresql://`` URL."""


def project_root(start: Pathish | None = None) -> Path:
    """The repository root: the nearest folder at or above ``start`` (default: cwd) holding
    ``pyproject.toml``; ``start`` itself when there is none."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return here


def under_test() -> bool:
    """True when ``RC_TMP=1``: the test suite sets it (its root ``conftest.py``), and so
    does a person who wants a short run in a temp folder."""
    return os.environ.get("RC_TMP", "") == "1"


def output_dir(name: str, *, start: Pathish | None = None) -> Path:
    """Where notebook ``name`` writes: ``$RC_DATA`` if set, a fresh temp folder under test
    (``under_test()``), else ``<repo>/data/notebooks/<name>``; created if missing."""
    env = os.environ.get("RC_DATA")
    if env:
        out = Path(env)
    elif under_test():
        return _fresh_temp_dir(name)
    else:
        out = project_root(start) / "data" / "notebooks" / name
    out.mkdir(parents=True, exist_ok=True)
    return out


TEMP_PARENT = Path(tempfile.gettempdir()) / f"robust-collector-notebooks-{os.getuid()}"
"""Where test runs of the notebooks write (one private folder per user, 0700); folders
older than a day are removed."""


def _private_parent(parent: Path) -> Path:
    """``parent`` as a folder only this user can enter: created 0700, and refused when it
    is a symlink, not a folder, owned by someone else or open to others (a planted path
    would otherwise make the clean-up below delete another user's folders)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(parent, 0o700)
    st = os.lstat(parent)
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeError(f"{parent} is not a folder (a symlink?): refusing to use it")
    if st.st_uid != os.getuid():
        raise RuntimeError(f"{parent} belongs to another user: refusing to use it")
    if st.st_mode & 0o077:
        os.chmod(parent, 0o700, follow_symlinks=False)
    return parent


def _fresh_temp_dir(name: str, max_age_seconds: float = 86_400.0) -> Path:
    parent = _private_parent(TEMP_PARENT)
    cutoff = time.time() - max_age_seconds
    for old in parent.iterdir():  # a killed kernel never cleans up: keep the litter bounded
        with contextlib.suppress(OSError):
            st = old.lstat()  # a symlink is never followed, never removed through
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and st.st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
