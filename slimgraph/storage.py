"""Model folders on disk: written atomically, checked before they are trusted.

Every folder slimgraph saves (a compiled model, a guarded set) ends with a
manifest, ``files.json``, that lists each file it wrote with its size and
SHA-256. The manifest is what makes a folder *ours*:

- saving replaces a folder only when it is empty or holds nothing but the files
  its manifest lists, and removes only those files; ``.``, a file, a symbolic
  link or a folder holding anything else is refused before any work is done;
- the new folder is built in a staging folder beside the target and swapped in
  with two renames under a lock, so at every instant either the old complete
  folder or the new one is on disk (the old one, for a moment, under a hidden
  backup name); a crash leaves at most a staging folder or a backup, which the
  next save or load of that target cleans up or restores;
- loading checks every listed file's size and digest before anything reads it,
  so a truncated library, a weights file from another model or a path that
  leaves the folder is a :class:`~slimgraph.errors.LoadError` naming the file,
  never a crash.

What the manifest does not do is make a folder safe to load: a compiled folder
holds native code that runs when it is loaded, like a pickle. Load only folders
you trust. The digests catch damage and mix-ups, not an attacker who rewrites
the manifest too.

Example::

    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> with staged_directory(os.path.join(root, "out"), "example") as staging:
    ...     _ = (staging / "a.txt").write_text("hello")
    >>> sorted(verify_folder(os.path.join(root, "out"))["files"])
    ['a.txt']
    >>> os.listdir(root)
    ['out']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from slimgraph.errors import LoadError, SaveError

try:  # the swap lock; platforms without flock fall back to a process-wide lock
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    import threading

    fcntl = None
    _PROCESS_LOCK = threading.Lock()

MANIFEST = "files.json"
MANIFEST_FORMAT = 1
_STAGING = ".sg-staging-"  # .<name>.sg-staging-<pid>-<random>: a folder being written
_BACKUP = ".sg-backup-"  # .<name>.sg-backup-<random>: the old folder during a swap
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------
# saving


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike, kind: str) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; when the block ends, write
    its manifest and swap it in for ``target``. If the block raises, the staging
    folder is removed and ``target`` is untouched.

    ``kind`` ("slimgraph model", "guarded model") is recorded in the manifest so
    a loader can tell what the folder holds. Raises :class:`SaveError` when
    ``target`` may not be replaced (see the module docstring) or the disk refuses.
    """
    target = Path(target)
    check_save_target(target)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with _locked(parent):
            _recover(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{_STAGING}{os.getpid()}-", dir=parent))
        os.chmod(staging, 0o777 & ~_umask())
    except OSError as exc:
        raise SaveError(f"{target}: cannot prepare the folder: {_reason(exc)}") from None
    try:
        yield staging
        _write_manifest(staging, kind)
        _fsync_tree(staging)
        with _locked(parent):
            check_save_target(target)  # again: another saver or the user may have acted meanwhile
            backup = None
            if target.exists():
                backup = Path(tempfile.mkdtemp(prefix=f".{target.name}{_BACKUP}", dir=parent))
                os.rename(target, backup / "old")
            os.rename(staging, target)
            _fsync_dir(parent)
            if backup is not None:
                _remove_ours(backup / "old")
                os.rmdir(backup)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        _recover_quietly(target)  # a swap that failed half-way puts the old folder back
        if isinstance(exc, OSError):
            raise SaveError(f"{target}: cannot save: {_reason(exc)}") from None
        raise


def write_private_file(final: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` to a fresh temporary file beside ``final`` with the
    permissions the umask gives new files, and return its name (for a rename)."""
    folder = os.path.dirname(os.path.abspath(final))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def check_save_target(target: str | os.PathLike) -> None:
    """Raise :class:`SaveError` unless ``target`` is new, empty or a folder slimgraph
    saved; callers check before long work so a bad output path fails at once."""
    target = Path(target)
    if target.is_symlink():
        raise SaveError(f"{target} is a symbolic link; save to the folder it points at, or to a new path")
    if not target.exists():
        return
    if not target.is_dir():
        raise SaveError(f"{target} is a file, not a folder; save to a new or empty folder")
    here = Path.cwd().resolve()
    resolved = target.resolve()
    if resolved == here or resolved in here.parents:
        raise SaveError(f"{target} is the current directory (or holds it); save to a new folder such as {target / 'model'}")
    listed = _listed_files(target)
    if listed is not None:
        present = {p.relative_to(target).as_posix() for p in target.rglob("*") if not p.is_dir()}
        foreign = sorted(present - listed - {MANIFEST})
    else:  # not ours: whatever it holds is the user's (no need to walk all of it)
        foreign = sorted(p.name for _, p in zip(range(6), target.iterdir()))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise SaveError(
            f"{target} holds files slimgraph did not write ({shown}); refusing to replace it: "
            "save to a new or empty folder"
        )


def _listed_files(folder: Path) -> set[str] | None:
    """The files ``folder``'s manifest lists; None when it has no readable manifest."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return {name for name in manifest["files"] if isinstance(name, str)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_manifest(staging: Path, kind: str) -> None:
    files = {}
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        files[path.relative_to(staging).as_posix()] = {"size": path.stat().st_size, "sha256": _digest(path)}
    manifest = {"format": MANIFEST_FORMAT, "kind": kind, "files": files}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _remove_ours(folder: Path) -> None:
    """Delete the files ``folder``'s manifest lists, then the folders they leave
    empty; anything else stays where it is."""
    # the manifest goes last: a removal killed half-way must still know what is ours
    for name in sorted(_listed_files(folder) or set()) + [MANIFEST]:
        with contextlib.suppress(LoadError, OSError):
            inside(folder, name, folder).unlink()
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


# ---------------------------------------------------------------------------
# recovery


def _recover(target: Path) -> None:
    """Undo what a save killed mid-way left beside ``target``: restore the backup
    when the target is gone, drop it when the target is whole, and remove staging
    folders whose writing process is dead. Called with the parent folder locked."""
    parent = target.parent
    if not parent.is_dir():
        return
    for backup in sorted(parent.glob(f".{_glob_escape(target.name)}{_BACKUP}*")):
        old = backup / "old"
        if not target.exists() and old.is_dir():
            os.rename(old, target)
        elif old.is_dir():
            _remove_ours(old)
        with contextlib.suppress(OSError):
            backup.rmdir()
    for staging in parent.glob(f".{_glob_escape(target.name)}{_STAGING}*"):
        pid = staging.name.rsplit(_STAGING, 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # one of this process's threads may still be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` across threads and processes."""
    if fcntl is None:  # pragma: no cover
        with _PROCESS_LOCK:
            yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# ---------------------------------------------------------------------------
# loading


def folder_kind(path: str | os.PathLike) -> str | None:
    """What the folder at ``path`` holds, from its manifest ("slimgraph model",
    "guarded model"), after restoring it if a save was killed mid-swap; None when
    ``path`` is not a folder slimgraph wrote."""
    path = Path(path)
    _recover_quietly(path)
    try:
        return json.loads((path / MANIFEST).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def verify_folder(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Check the folder at ``path`` against its manifest and return the manifest.

    Every listed file must lie inside the folder, be a regular file and have the
    recorded size and SHA-256; ``kind``, when given, must match. Anything else is
    a :class:`LoadError` naming the file and what is wrong.
    """
    path = Path(path)
    _recover_quietly(path)
    what = kind or "slimgraph folder"
    if not path.exists():
        raise LoadError(f"{path}: no such folder")
    if not path.is_dir():
        raise LoadError(f"{path} is a file, not a saved {what}")
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise LoadError(f"{path} is not a saved {what} (no {MANIFEST}; folders saved before slimgraph wrote one must be saved again)")
    manifest = read_json(manifest_file, MANIFEST_FORMAT, "manifest")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise LoadError(f"{manifest_file}: the manifest lists no files")
    if kind is not None and manifest.get("kind") != kind:
        raise LoadError(f"{path} holds a {manifest.get('kind')!r}, not a {kind}")
    root = path.resolve()
    for name, entry in files.items():
        file = inside(path, name, manifest_file)
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or not isinstance(entry.get("sha256"), str):
            raise LoadError(f"{manifest_file}: entry {name!r} has no size and sha256")
        if not file.is_file() or not file.resolve().is_relative_to(root):
            raise LoadError(f"{file}: missing (the manifest lists it)")
        size = file.stat().st_size
        if size != entry["size"]:
            raise LoadError(f"{file}: {size} bytes, the manifest says {entry['size']} (truncated or replaced)")
        if _digest(file) != entry["sha256"]:
            raise LoadError(f"{file}: its SHA-256 differs from the manifest's (damaged, or from another model)")
    return manifest


def read_json(file: Path, version: int, what: str) -> dict[str, Any]:
    """The JSON object in ``file`` whose ``format`` is ``version``; a :class:`LoadError`
    naming ``file`` and ``what`` it should hold otherwise."""
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise LoadError(f"{file}: unreadable {what}: {_reason(exc)}") from None
    if not isinstance(data, dict) or data.get("format") != version:
        found = data.get("format") if isinstance(data, dict) else None
        raise LoadError(f"{file}: {what} of format {found!r}, this slimgraph reads {version}")
    return data


def inside(folder: Path, name: Any, where: Path | str) -> Path:
    """``folder / name`` for a relative path ``name`` that stays inside ``folder``;
    a :class:`LoadError` naming ``where`` (the file that gave the name) otherwise."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise LoadError(f"{where}: {name!r} is not a file name")
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or ".." in parts:
        raise LoadError(f"{where}: {name!r} points outside the folder {folder}")
    return folder.joinpath(*parts)


def _recover_quietly(path: Path) -> None:
    """Recovery on load: a read-only location simply stays as it is."""
    with contextlib.suppress(OSError):
        if path.parent.is_dir():
            with _locked(path.parent):
                _recover(path)


# ---------------------------------------------------------------------------
# helpers


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` so the rename publishes whole files."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot sync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (threads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _reason(exc: OSError | ValueError) -> str:
    """An OS error's reason without the temporary names it may carry."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
