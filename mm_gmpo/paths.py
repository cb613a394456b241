"""Checks that a folder or file can be written, run before the work whose result would be lost otherwise."""

from __future__ import annotations

from pathlib import Path

from mm_gmpo.errors import UserError


def writable_dir(path: str | Path, name: str) -> Path:
    """Create folder ``path`` (``name``: the flag or key that gave it) and prove it writable, or fail in one line:
    a file, under a file, or not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{name}={path} is a file, not a folder")
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise UserError(f"{name}={path} is under {above}, which is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{name}={path} is not writable ({exc.strerror or exc})") from exc
    return path


def writable_file(path: str | Path, name: str) -> Path:
    """Check that file ``path`` can be created or replaced (its folder is created), without leaving it behind when
    it did not exist; or fail in one line."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{name}={path} is a folder, not a file")
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise UserError(f"{name}={path} is under {above}, which is a file")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise UserError(f"{name}={path} is not writable ({exc.strerror or exc})") from exc
    if not existed:
        path.unlink(missing_ok=True)
    return path
