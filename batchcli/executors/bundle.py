"""Shipping a project's code to workers that cannot see the driver's disk (a Dask cluster).

The driver zips the project (a single file, or the whole project directory) into a ``Bundle``;
each worker machine unpacks it once per content digest under its temp directory and loads it from
there. Module names come from file and directory names, so they are the same as in the driver and
items pickle across. Installed jobs are not shipped: workers import them by name.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from batchcli.errors import ProjectError

MAX_BUNDLE_BYTES = 50 * 1024 * 1024
"""Largest project batchcli ships; bigger ones should be installed on the workers."""

_SKIPPED_DIRS = {"__pycache__", "batchcli_outputs", "node_modules", "build", "dist"}


@dataclass(frozen=True)
class Bundle:
    """A project's files as one zip, and where its target lies inside it."""

    digest: str
    """SHA-256 of the zip: workers unpack each distinct bundle once."""
    data: bytes
    """The zip itself."""
    target: str
    """The path to load, relative to the unpacked root (``proj/main.py``, ``proj``, ``job.py``)."""


def bundle_project(target: str) -> Bundle | None:
    """Zip the project at path ``target``; None when ``target`` names an installed job."""
    path = Path(target).expanduser()
    if not path.exists():
        return None
    path = path.resolve()
    if path.is_file():
        root = path.parent
        if (root / "__init__.py").exists() or (root / "config").is_dir():
            files, inner = _tree(root), f"{root.name}/{path.name}"
            base = root.parent
        else:
            files, inner, base = [path], path.name, root
    else:
        files, inner, base = _tree(path), path.name, path.parent
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            data = file.read_bytes()
            total += len(data)
            if total > MAX_BUNDLE_BYTES:
                raise ProjectError(
                    f"The project {target!r} holds more than {MAX_BUNDLE_BYTES // 2**20} MB of files, too much to "
                    "send to every Dask worker. Move data files out of the project directory, or install the "
                    "project as a package on the workers and run it as an installed job."
                )
            # A fixed timestamp keeps the digest stable, so workers reuse what they unpacked before.
            info = zipfile.ZipInfo(file.relative_to(base).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (file.stat().st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    data = buffer.getvalue()
    return Bundle(hashlib.sha256(data).hexdigest(), data, inner)


def _tree(root: Path) -> list[Path]:
    """The files of a project directory, without caches, hidden files, outputs and virtualenvs."""
    found: list[Path] = []
    for directory, dirs, files in os.walk(root):
        here = Path(directory)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS and not (here / d / "pyvenv.cfg").exists()
        )
        found += [here / f for f in sorted(files) if not f.startswith(".") and not f.endswith((".pyc", ".pyo"))]
    return found


def bundles_root() -> Path:
    """Where workers unpack bundles."""
    return Path(tempfile.gettempdir()) / "batchcli-projects"


def unpack(bundle: Bundle) -> str:
    """Unpack ``bundle`` on this machine (once per digest) and return the local path of its target."""
    root = bundles_root()
    dest = root / bundle.digest
    if not (dest / ".complete").exists():
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{bundle.digest}.", dir=root))
        try:
            with zipfile.ZipFile(io.BytesIO(bundle.data)) as archive:
                for name in archive.namelist():
                    if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
                        raise ProjectError(f"The shipped project holds an unsafe path {name!r}.")
                archive.extractall(scratch)
            (scratch / ".complete").touch()
            os.replace(scratch, dest)  # atomic: other processes see all of it or nothing
        except OSError:
            if not (dest / ".complete").exists():
                raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    _forget_other_bundles(dest)
    return str(dest / bundle.target)


def _forget_other_bundles(keep: Path) -> None:
    """Drop modules loaded from other unpacked bundles: a newer version of the same project may reuse their names."""
    root = str(bundles_root())
    keep_prefix = str(keep) + os.sep
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", []) or []), None)
        if file and str(file).startswith(root) and not str(file).startswith(keep_prefix):
            del sys.modules[name]
