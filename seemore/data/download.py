"""Verified downloads and safe extraction (DESIGN.md §3).

A download is streamed to a temp file beside its destination, its SHA-256 is checked, and
only then is it renamed into place: a failure or mismatch never leaves a file that looks valid.

Where no SHA-256 is published for a file (`RemoteFile.sha256` is None), the first copy is
trusted ("trust on first use"): once it passes its structural check (the caller's `check`,
e.g. the archive holds the expected layout) its SHA-256 is recorded in `<name>.sha256` beside
it, with a warning, and every later run verifies the file against that record. A SHA-1
published by another source, where one exists, is checked on that first use as well.
Downloads time out (DOWNLOAD_TIMEOUT seconds without data); archives are extracted only
within a size and compression-ratio limit (an archive bomb is refused before anything is
written).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CHUNK = 1 << 20
# Seconds a download may wait for the server (to connect, or for the next block of data).
DOWNLOAD_TIMEOUT = 60.0
# An archive may expand to at most this many bytes, and to at most this many times its own
# size (the real archives expand 1-3x; a bomb expands 1000x).
EXTRACT_MAX_BYTES = 200 * 1024**3
EXTRACT_MAX_RATIO = 100
# Suffix of the file that records a trusted-on-first-use SHA-256 beside the file it pins.
PIN_SUFFIX = ".sha256"

logger = logging.getLogger(__name__)


class DataError(RuntimeError):
    """Raw data that cannot be used: missing, corrupt, or of the wrong shape; says which file."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to download. `sha256` None: no SHA-256 is published, so the first copy is
    trusted and its hash recorded (see the module docstring). `sha1`: a published SHA-1,
    checked on that first use."""

    name: str
    url: str
    sha256: str | None
    sha1: str | None = None


def file_digests(path: Path, *algorithms: str) -> dict[str, str]:
    """Hex digests of `path` for each hashlib algorithm name, in one pass over the file."""
    digests = {name: hashlib.new(name) for name in algorithms}
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            for digest in digests.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}


def sha256_file(path: Path) -> str:
    return file_digests(path, "sha256")["sha256"]


def verify(path: Path, sha256: str) -> None:
    actual = sha256_file(path)
    if actual != sha256:
        raise DataError(f"{path}: SHA-256 is {actual}, expected {sha256}; the file is corrupt")


def pin_path(directory: Path, remote: RemoteFile) -> Path:
    return directory / f"{remote.name}{PIN_SUFFIX}"


def expected_sha256(remote: RemoteFile, directory: Path) -> str | None:
    """The published SHA-256, else the one recorded on first use, else None."""
    if remote.sha256 is not None:
        return remote.sha256
    pin = pin_path(directory, remote)
    if not pin.is_file():
        return None
    recorded = pin.read_text().strip()
    if len(recorded) != 64 or any(c not in "0123456789abcdef" for c in recorded):
        raise DataError(f"{pin}: expected one lowercase hex SHA-256, found {recorded[:80]!r}")
    return recorded


def _trust_on_first_use(path: Path, remote: RemoteFile, directory: Path, origin: str) -> None:
    """Check the published SHA-1 if any, then record the SHA-256 of `path` as the pin."""
    digests = file_digests(path, "sha256", *(["sha1"] if remote.sha1 else []))
    if remote.sha1 is not None and digests["sha1"] != remote.sha1:
        raise DataError(
            f"{origin}: SHA-1 is {digests['sha1']}, expected the published {remote.sha1}; "
            "the file is corrupt or not the published one"
        )
    pin = pin_path(directory, remote)
    text = digests["sha256"] + "\n"
    handle, temp = tempfile.mkstemp(dir=directory, prefix=f".{pin.name}.", suffix=".part")
    with os.fdopen(handle, "w") as file:
        file.write(text)
    os.replace(temp, pin)
    checked = "its published SHA-1 matched; " if remote.sha1 else ""
    logger.warning(
        "%s: no published SHA-256; %strusting it on first use and recording %s in %s, "
        "which later runs verify",
        origin,
        checked,
        digests["sha256"],
        pin,
    )


def _repin_help(remote: RemoteFile, directory: Path) -> str:
    """How to accept a new copy of a trusted-on-first-use file, for the mismatch message."""
    if remote.sha256 is not None:
        return "the pin is published with the code, so the file is not the published one"
    return (
        f"if the source has republished the file and you trust the new copy, delete "
        f"{pin_path(directory, remote)} and run again to re-pin it"
    )


def _download(remote: RemoteFile, out: Path) -> None:
    try:
        with (
            out.open("wb") as file,
            urllib.request.urlopen(remote.url, timeout=DOWNLOAD_TIMEOUT) as response,
        ):
            shutil.copyfileobj(response, file, CHUNK)
    except TimeoutError:
        raise DataError(
            f"{remote.url}: no data for {DOWNLOAD_TIMEOUT:g} s; the download timed out, "
            "nothing was kept"
        ) from None
    except OSError as error:
        # URLError and HTTPError are OSErrors; their reason says what went wrong.
        reason = getattr(error, "reason", error)
        raise DataError(f"{remote.url}: download failed ({reason}); nothing was kept") from None


def fetch(remote: RemoteFile, directory: Path, check: Callable[[Path], None] | None = None) -> Path:
    """`directory/remote.name`, downloaded and verified unless a verified copy is there.
    `check(path)` raises DataError when a file is not structurally what it should be; it
    runs before a first copy is trusted, so a bad first download never becomes the pin."""
    target = directory / remote.name
    expected = expected_sha256(remote, directory)
    if target.is_file():
        if expected is None:
            # Placed there by hand or restored without its pin: trusted like a first download.
            if check is not None:
                check(target)
            _trust_on_first_use(target, remote, directory, str(target))
        else:
            try:
                verify(target, expected)
            except DataError as error:
                raise DataError(f"{error}; delete it to download it again") from None
        return target
    directory.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{remote.name}.", suffix=".part")
    os.close(handle)
    temp = Path(temp_name)
    try:
        _download(remote, temp)
        if expected is None:
            if check is not None:
                check(temp)
            _trust_on_first_use(temp, remote, directory, remote.url)
        else:
            try:
                verify(temp, expected)
            except DataError:
                pinned = "the published pin" if remote.sha256 else str(pin_path(directory, remote))
                raise DataError(
                    f"{remote.url}: downloaded file has the wrong SHA-256 (expected {expected}, "
                    f"from {pinned}); nothing was kept; {_repin_help(remote, directory)}"
                ) from None
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


def fetch_extracted(
    remote: RemoteFile,
    raw_dir: Path,
    target: Path,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Fetch and verify `remote` into `raw_dir` and extract it into `target` (again only when
    the archive changed: a marker beside `target` records the SHA-256 it was extracted from);
    returns `target`."""
    archive = fetch(remote, raw_dir, check)
    digest = expected_sha256(remote, raw_dir)
    marker = target.parent / f".{target.name}.extracted"
    if target.is_dir() and marker.is_file() and marker.read_text().strip() == digest:
        return target
    partial = target.parent / f".{target.name}.partial"
    for stale in (target, partial):
        shutil.rmtree(stale, ignore_errors=True)
    marker.unlink(missing_ok=True)
    safe_extract(archive, partial)
    partial.rename(target)
    marker.write_text(f"{digest}\n")
    return target


def zip_names(archive: Path) -> list[str]:
    """The entry names of a zip archive, for structural checks before it is trusted."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            return zipped.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{archive}: not a readable zip archive ({error})") from None


def _checked_member_path(archive: Path, target: Path, name: str) -> Path:
    pure = PurePosixPath(name.replace("\\", "/"))
    destination = (target / pure).resolve()
    if pure.is_absolute() or not destination.is_relative_to(target.resolve()):
        raise DataError(f"{archive}: entry {name!r} would be extracted outside {target}; refused")
    return destination


def _check_tar_end(archive: Path, tarred: tarfile.TarFile) -> None:
    """A tar cut at a member boundary reads as a shorter valid archive; only the zero block
    that every tar writer puts after the last member tells the two apart."""
    assert tarred.fileobj is not None
    tarred.fileobj.seek(tarred.offset)
    block = tarred.fileobj.read(tarfile.BLOCKSIZE)
    if len(block) != tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
        entries = len(tarred.getmembers())
        raise DataError(
            f"{archive}: ends after {entries} entries without the tar end-of-archive marker; "
            "truncated"
        )


def _check_expanded_size(archive: Path, expanded: int) -> None:
    """Refuse an archive that would expand beyond the size or compression-ratio limit."""
    size = max(archive.stat().st_size, 1)
    if expanded > EXTRACT_MAX_BYTES or expanded > EXTRACT_MAX_RATIO * size:
        raise DataError(
            f"{archive}: would expand to {expanded:,} bytes from {size:,} "
            f"({expanded / size:.0f}x); refused, the limits are {EXTRACT_MAX_BYTES:,} bytes "
            f"and {EXTRACT_MAX_RATIO}x (an archive bomb or not the expected file)"
        )


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a zip or tar archive into `target`, refusing any entry (or link) that would land
    outside it, an archive expanding beyond the size or ratio limit, and any truncated or
    unreadable archive, before anything is written."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                entries = zipped.infolist()
                for entry in entries:
                    _checked_member_path(archive, target, entry.filename)
                # zipfile never yields more than an entry's declared size (a larger stream
                # fails its CRC check), so the declared sizes bound what is written.
                _check_expanded_size(archive, sum(entry.file_size for entry in entries))
                bad = zipped.testzip()
                if bad is not None:
                    raise DataError(f"{archive}: entry {bad!r} is corrupt")
                zipped.extractall(target)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tarred:
                members = tarred.getmembers()
                _check_tar_end(archive, tarred)
                _check_expanded_size(archive, sum(member.size for member in members))
                for member in members:
                    _checked_member_path(archive, target, member.name)
                    if member.islnk() or member.issym():
                        raise DataError(f"{archive}: entry {member.name!r} is a link; refused")
                tarred.extractall(target, members=members, filter="data")
        else:
            raise DataError(f"{archive}: not a zip or tar archive (truncated or corrupt?)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"{archive}: cannot be extracted ({error}); truncated or corrupt") from None


def local_file_record(path: Path, pinned: str | None) -> dict[str, str]:
    """meta.json's record of a file read from a `local` root: checked against its pinned
    SHA-256 where one exists (a mismatch is an error), else its own SHA-256, unverified."""
    if pinned is not None:
        verify(path, pinned)
        return {"sha256": pinned, "status": "verified against the pinned SHA-256"}
    return {"sha256": sha256_file(path), "status": "unverified (no pin exists for this file)"}


def download_record(remote: RemoteFile, directory: Path) -> dict[str, str]:
    """meta.json's record of a fetched file: its SHA-256 and where the pin came from."""
    digest = expected_sha256(remote, directory)
    assert digest is not None, f"{remote.name} was not fetched"
    if remote.sha256 is not None:
        return {"sha256": digest, "status": "verified against the pinned SHA-256"}
    return {
        "sha256": digest,
        "status": f"verified against the trust-on-first-use pin {pin_path(directory, remote)}",
    }
