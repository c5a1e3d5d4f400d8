"""Verified downloads and safe extraction (DESIGN.md §3).

A download is streamed to a temp file beside its destination, its SHA-256 is checked, and
only then is it renamed into place: a failure or mismatch never leaves a file that looks valid.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CHUNK = 1 << 20


class DataError(RuntimeError):
    """Raw data that cannot be used: missing, corrupt, or of the wrong shape; says which file."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    sha256: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, sha256: str) -> None:
    actual = sha256_file(path)
    if actual != sha256:
        raise DataError(f"{path}: SHA-256 is {actual}, expected {sha256}; the file is corrupt")


def fetch(remote: RemoteFile, directory: Path) -> Path:
    """`directory/remote.name`, downloaded and verified unless a verified copy is there."""
    target = directory / remote.name
    if target.is_file():
        verify(target, remote.sha256)
        return target
    directory.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{remote.name}.", suffix=".part")
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(remote.url) as response:
            shutil.copyfileobj(response, out, CHUNK)
        try:
            verify(temp, remote.sha256)
        except DataError:
            raise DataError(
                f"{remote.url}: downloaded file has the wrong SHA-256 (expected {remote.sha256}); "
                "nothing was kept"
            ) from None
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


def _checked_member_path(archive: Path, target: Path, name: str) -> Path:
    pure = PurePosixPath(name.replace("\\", "/"))
    destination = (target / pure).resolve()
    if pure.is_absolute() or not destination.is_relative_to(target.resolve()):
        raise DataError(f"{archive}: entry {name!r} would be extracted outside {target}; refused")
    return destination


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a zip or tar archive into `target`, refusing any entry (or link) that would land
    outside it, and any truncated or unreadable archive, before anything is written."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                for name in zipped.namelist():
                    _checked_member_path(archive, target, name)
                bad = zipped.testzip()
                if bad is not None:
                    raise DataError(f"{archive}: entry {bad!r} is corrupt")
                zipped.extractall(target)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tarred:
                members = tarred.getmembers()
                for member in members:
                    _checked_member_path(archive, target, member.name)
                    if member.islnk() or member.issym():
                        raise DataError(f"{archive}: entry {member.name!r} is a link; refused")
                tarred.extractall(target, members=members, filter="data")
        else:
            raise DataError(f"{archive}: not a zip or tar archive (truncated or corrupt?)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"{archive}: cannot be extracted ({error}); truncated or corrupt") from None
