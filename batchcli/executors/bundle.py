"""Shipping a project's code to workers that cannot see the driver's disk (a Dask or Ray cluster).

The driver zips the project (a single file, or the whole project directory: ``Project.root``) into a ``Bundle``;
each worker process unpacks it once per run into a private directory of the current user, checks
every file against the bundle's manifest, and loads it from there. Module names come from file and
directory names, so they are the same as in the driver and items pickle across. Installed jobs are
not shipped: workers import them by name. Ray ships the files itself (``stage`` writes them for its
``runtime_env``), and each actor copies them into its own private directory and checks them (``adopt``).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from batchcli.errors import ProjectError
from batchcli.load.project import Project

try:
    import fcntl
except ImportError:  # Windows has none: there, copies that dead workers left stay
    fcntl = None  # type: ignore[assignment]

MAX_BUNDLE_BYTES = 50 * 1024 * 1024
"""Largest project batchcli ships; bigger ones should be installed on the workers."""

_SKIPPED_DIRS = {"__pycache__", "batchcli_outputs", "node_modules", "build", "dist"}

OWNER_SUFFIX = ".owner"
"""Beside each private copy, a file its process holds locked (``flock``) for as long as it lives."""

ABANDONED_AFTER_S = 60.0
"""A copy whose owner file nobody holds is removed once the file is this old (see ``_sweep``)."""


@dataclass(frozen=True)
class Bundle:
    """A project's files as one zip, and where its target lies inside it."""

    digest: str
    """SHA-256 of the zip: workers check what they received against it before unpacking."""
    data: bytes
    """The zip itself."""
    target: str
    """The path to load, relative to the unpacked root (``proj/main.py``, ``proj``, ``job.py``)."""


def bundle_project(project: Project) -> Bundle | None:
    """Zip the files of ``project`` from the root it was loaded from; None for an installed job.

    The root is the one ``load_project`` chose (a directory project, a file of one, or a lone file):
    re-deriving it here once missed the relative-import rule, so a lone ``main.py`` with
    ``from .parts import ...`` was shipped without its directory and could not load on the workers.
    """
    if project.root is None:
        return None
    root, entry = project.root, project.entry or project.root
    base = root.parent
    files = _tree(root) if root.is_dir() else [root]
    # The worker loads the same relative path, so load_project decides there exactly as it did here.
    inner = entry.relative_to(base).as_posix()
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            data = file.read_bytes()
            total += len(data)
            if total > MAX_BUNDLE_BYTES:
                raise ProjectError(
                    f"The project {project.target!r} holds more than {MAX_BUNDLE_BYTES // 2**20} MB of files, too much to "
                    "send to every Dask worker or Ray actor. Move data files out of the project directory, or install the "
                    "project as a package on the workers and run it as an installed job."
                )
            # A fixed timestamp keeps the digest stable: the same project is the same bundle, run after run.
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


def unpack(bundle: Bundle, key: str) -> str:
    """Unpack ``bundle`` for the run ``key`` in this process and return the local path of its target.

    Each process unpacks into a fresh directory of its own (``mkdtemp``: created exclusively, 0700)
    under the current user's private root, then checks every file against the bundle's manifest
    before anything is imported. Nothing there is ever reused from an earlier run: a directory that
    someone else could have written into would run their code as us. ``discard(key)`` removes it.
    """
    data_digest = hashlib.sha256(bundle.data).hexdigest()
    if data_digest != bundle.digest:
        raise ProjectError(
            f"The shipped project does not match its digest (expected {bundle.digest}, got {data_digest}): it was "
            "damaged on its way to this worker. Run the job again; if it keeps failing, check the network path."
        )
    dest = _private_copy(key)
    try:
        with zipfile.ZipFile(io.BytesIO(bundle.data)) as archive:
            manifest = _manifest(archive)
            archive.extractall(dest)
        _verify(dest, manifest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        _release(dest)
        raise
    _forget_earlier_copies(_top_level_name(bundle.target), dest)
    _unpacked.add(dest)
    return str(dest / bundle.target)


def stage(bundle: Bundle) -> Path:
    """Write ``bundle``'s files into a fresh private directory, for a tool that ships directories (Ray's ``working_dir``);
    ``unstage`` removes it. Claimed as the copies ``unpack`` makes are: a driver killed with ``kill -9`` left its
    staged project (up to ``MAX_BUNDLE_BYTES``) for good, where ``_sweep`` leaves a copy with no owner file alone."""
    root = private_root()
    _sweep(root)
    dest = Path(tempfile.mkdtemp(prefix="batchcli-stage-", dir=root))
    _claim(dest)
    try:
        with zipfile.ZipFile(io.BytesIO(bundle.data)) as archive:
            _manifest(archive)  # refuses paths that would leave the directory
            archive.extractall(dest)
    except BaseException:
        unstage(dest)
        raise
    return dest


def unstage(dest: Path) -> None:
    """Remove a directory ``stage`` wrote, and its owner file."""
    shutil.rmtree(dest, ignore_errors=True)
    _release(dest)


def manifest_of(bundle: Bundle) -> dict[str, str]:
    """SHA-256 of each file of ``bundle``, by relative path: what ``adopt`` checks a shipped copy against."""
    with zipfile.ZipFile(io.BytesIO(bundle.data)) as archive:
        return _manifest(archive)


def adopt(source: Path, manifest: dict[str, str], target: str, key: str) -> str:
    """Copy a project another tool shipped to ``source`` into a private directory, check it, return its target's path.

    Ray unpacks a ``working_dir`` under its session directory, which every local user may write to
    (mode 0777, not sticky): importing from there would run whatever someone put there. So the files
    the driver listed are copied into a fresh directory of ours (as ``unpack`` makes) and checked
    against the driver's digests, which travelled with the run's spec, before anything is imported.
    """
    dest = _private_copy(key)
    try:
        for name in manifest:
            path = PurePosixPath(name)
            if path.is_absolute() or ".." in path.parts:
                raise ProjectError(f"The shipped project holds an unsafe path {name!r}.")
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(source / path, dest / path)
            except OSError as error:
                raise ProjectError(
                    f"The shipped project's file {name!r} cannot be read in {str(source)!r} ({error.strerror}): the "
                    "cluster did not deliver the whole project. Run the job again; if it keeps failing, check the "
                    "workers' disk space."
                ) from None
        _verify(dest, manifest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        _release(dest)
        raise
    _forget_earlier_copies(_top_level_name(target), dest)
    _unpacked.add(dest)
    return str(dest / target)


def discard(key: str) -> None:
    """Remove what the run ``key`` unpacked on this machine (also by processes that have died since)."""
    root = private_root()
    for path in root.glob(f"{key}.*"):
        if path.name.endswith(OWNER_SUFFIX):
            continue
        shutil.rmtree(path, ignore_errors=True)
        _release(path)


def _private_copy(key: str) -> Path:
    """A fresh private directory for the run ``key``'s copy of the project, claimed by this process (``_claim``);
    copies that processes which died left behind are removed first (``_sweep``)."""
    root = private_root()
    _sweep(root)
    dest = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=root))
    _claim(dest)
    return dest


def _claim(dest: Path) -> None:
    """Lock ``dest``'s owner file for as long as this process lives: the kernel lets the lock go when the process
    ends however it ends (``kill -9``, a worker lost), which is what ``_sweep`` asks."""
    if fcntl is None:
        return
    fd = os.open(f"{dest}{OWNER_SUFFIX}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    _owned[dest] = fd


def _release(dest: Path) -> None:
    """Remove ``dest``'s owner file, and let its lock go when this process held it."""
    fd = _owned.pop(dest, None)
    Path(f"{dest}{OWNER_SUFFIX}").unlink(missing_ok=True)
    if fd is not None:
        os.close(fd)


def _sweep(root: Path) -> None:
    """Remove the copies under ``root`` whose process has died: a worker lost, or a driver killed before its
    cluster's workers removed theirs (``discard``) left them, about 10 KB each, for good.

    A pid in the name would not tell: where containers share the temp directory, another container's live
    worker can have any pid. A lock does: a copy is removed only when its owner file is older than
    ``ABANDONED_AFTER_S`` and nobody holds its lock. A copy with no owner file (from a batchcli before these,
    or one being made) is left alone.
    """
    if fcntl is None:
        return
    now = time.time()
    for owner in root.glob(f"*{OWNER_SUFFIX}"):
        dest = Path(str(owner)[: -len(OWNER_SUFFIX)])
        if dest in _owned:
            continue
        try:
            fd = os.open(owner, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile, or not a plain file of ours
            continue
        try:
            if now - os.fstat(fd).st_mtime < ABANDONED_AFTER_S:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # its process is alive
                continue
            shutil.rmtree(dest, ignore_errors=True)
            owner.unlink(missing_ok=True)
        finally:
            os.close(fd)


def private_root(base: Path | None = None) -> Path:
    """A directory only the current user owns and can write, to unpack bundles into.

    ``<tmp>/batchcli-projects`` when it is ours and private, else ``<tmp>/batchcli-projects-<uid>``
    under the same conditions, else a fresh ``mkdtemp`` directory (kept for this process). A shared
    temp directory lets anyone create those names first; a directory another user owns is never used,
    since its owner could swap what we unpack there.
    """
    global _fallback_root
    base = Path(tempfile.gettempdir()) if base is None else base
    _check_base(base)
    for candidate in (base / "batchcli-projects", base / f"batchcli-projects-{os.getuid()}"):
        try:
            candidate.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError:
            continue
        if _is_private(candidate):
            return candidate
    if _fallback_root is None or not _is_private(_fallback_root):
        _fallback_root = Path(tempfile.mkdtemp(prefix="batchcli-projects-", dir=base))
    return _fallback_root


def _check_base(base: Path) -> None:
    """Refuse a temp directory whose other writers could rename what we create in it and put theirs instead.

    Ours or root's, and either writable only by its owner or sticky (as ``/tmp`` is): the sticky bit keeps
    others from renaming our entries. A ``TMPDIR`` another user owns fails this, whatever is inside.
    """
    try:
        info = os.stat(base)
    except OSError as error:
        raise ProjectError(
            f"The temp directory {str(base)!r} of this cluster worker cannot be used ({error.strerror}). Point TMPDIR "
            "at a directory of your own where the workers run (for example `mkdir -m 700 ~/tmp`)."
        ) from None
    owner_ok = info.st_uid in (os.getuid(), 0)
    if not owner_ok or (info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX):
        raise ProjectError(
            f"The temp directory {str(base)!r} of this cluster worker (owner uid {info.st_uid}, mode "
            f"{stat.S_IMODE(info.st_mode):o}) lets someone else replace the project's files before they are "
            "imported. Point TMPDIR at a directory of your own where the workers run (for example "
            "`mkdir -m 700 ~/tmp`), or make this one sticky (`chmod +t`)."
        )


def _is_private(path: Path) -> bool:
    """A real directory (not a symlink) of the current user that nobody else can write to."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022


def _manifest(archive: zipfile.ZipFile) -> dict[str, str]:
    """SHA-256 of every file in the archive, by relative path; refuses paths that would leave the directory."""
    manifest = {}
    for info in archive.infolist():
        name = PurePosixPath(info.filename)
        if name.is_absolute() or ".." in name.parts:
            raise ProjectError(f"The shipped project holds an unsafe path {info.filename!r}.")
        if not info.is_dir():
            manifest[name.as_posix()] = hashlib.sha256(archive.read(info)).hexdigest()
    return manifest


def _verify(dest: Path, manifest: dict[str, str]) -> None:
    """Check that ``dest`` holds exactly the manifest's files with their content, before any is imported."""
    found = {}
    for directory, _, files in os.walk(dest):
        for file in files:
            path = Path(directory) / file
            found[path.relative_to(dest).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    if found != manifest:
        wrong = sorted(set(found.items()) ^ set(manifest.items()))
        raise ProjectError(
            f"The project unpacked in {str(dest)!r} does not match what was shipped ({wrong[0][0]!r} differs): "
            "something changed it while it was unpacked. Check who can write to the temp directory "
            "(TMPDIR) of the cluster's workers, and run the job again."
        )


def _top_level_name(target: str) -> str:
    """The top-level module name a bundle's target is imported under (``proj`` for ``proj/main.py``)."""
    first = PurePosixPath(target).parts[0]
    return first[:-3] if first.endswith(".py") else first


# Directories this process unpacked into: modules loaded from them may be dropped for a newer copy.
_unpacked: set[Path] = set()
_owned: dict[Path, int] = {}
"""The owner files this process holds locked, by copy."""
_fallback_root: Path | None = None


def _forget_earlier_copies(name: str, keep: Path) -> None:
    """Drop the modules of an earlier copy of this project that this process unpacked, so the new one loads.

    Only the module ``name`` and its submodules are dropped, and only when ``name`` came from a directory
    this process unpacked: other projects on a long-lived worker keep their modules. Whether to drop is
    decided on ``name`` alone, before anything is deleted, because a namespace subpackage's ``__path__``
    is computed from its parent's entry in ``sys.modules``.
    """
    module = sys.modules.get(name)
    if module is None:
        return
    spec = getattr(module, "__spec__", None)
    locations = [getattr(module, "__file__", None), *(getattr(spec, "submodule_search_locations", None) or [])]
    earlier = [Path(loc) for loc in locations if loc]
    if not any(directory in path.parents and directory != keep for path in earlier for directory in _unpacked):
        return
    for loaded in [n for n in sys.modules if n == name or n.startswith(name + ".")]:
        del sys.modules[loaded]
