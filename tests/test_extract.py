"""Verified downloads (file:// URLs and a silent local socket, never the network) and safe
extraction: refusals of path-traversal entries, links, archive bombs and truncated or corrupt
archives, before anything is written; wrong checksums; timeouts; trust on first use where no
SHA-256 is published, only after the structural check, and how to re-pin."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import zipfile
from pathlib import Path

import pytest

from seemore.data import download as download_module
from seemore.data.download import DataError, RemoteFile, fetch, safe_extract, sha256_file

PAYLOAD = bytes(range(256)) * 64


def tar_bytes(entries: dict[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def everything_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# --- safe_extract ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz"])
def test_valid_archives_extract_their_entries(tmp_path: Path, suffix: str) -> None:
    entries = {"videos/a.bin": PAYLOAD, "videos/b.bin": PAYLOAD[::-1]}
    data = zip_bytes(entries) if suffix == ".zip" else tar_bytes(entries, f"w:{suffix[5:]}")
    archive = tmp_path / f"good{suffix}"
    archive.write_bytes(data)
    safe_extract(archive, tmp_path / "out")
    for name, content in entries.items():
        assert (tmp_path / "out" / name).read_bytes() == content


@pytest.mark.parametrize("name", ["../escape.txt", "inner/../../escape.txt", "/tmp/abs.txt"])
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_an_entry_outside_the_target_is_refused_before_anything_is_written(
    tmp_path: Path, name: str, kind: str
) -> None:
    entries = {"harmless.txt": b"first", name: b"payload"}
    archive = tmp_path / f"evil.{kind}"
    archive.write_bytes(zip_bytes(entries) if kind == "zip" else tar_bytes(entries))
    target = tmp_path / "deep" / "out"
    with pytest.raises(DataError, match="outside"):
        safe_extract(archive, target)
    assert everything_under(target) == []
    assert not (tmp_path / "deep" / "escape.txt").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_a_tar_link_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    (tmp_path / "link.tar").write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="link; refused"):
        safe_extract(tmp_path / "link.tar", tmp_path / "out")
    assert everything_under(tmp_path / "out") == []


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_a_truncated_archive_is_refused(tmp_path: Path, kind: str) -> None:
    entries = {f"f{i}.bin": PAYLOAD for i in range(3)}
    data = zip_bytes(entries) if kind == "zip" else tar_bytes(entries, f"w:{kind[4:]}")
    archive = tmp_path / f"cut.{kind}"
    archive.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match=r"truncated"):
        safe_extract(archive, tmp_path / "out")
    assert everything_under(tmp_path / "out") == []


def test_a_tar_cut_at_an_entry_boundary_is_refused(tmp_path: Path) -> None:
    # Cut right after the second entry: what is left reads as a valid two-entry tar, and only
    # the missing end-of-archive marker tells (this once extracted silently).
    data = tar_bytes({f"f{i}.bin": PAYLOAD for i in range(3)})
    entry_bytes = tarfile.BLOCKSIZE + len(PAYLOAD)
    (tmp_path / "cut.tar").write_bytes(data[: 2 * entry_bytes])
    with pytest.raises(DataError, match="end-of-archive marker; truncated"):
        safe_extract(tmp_path / "cut.tar", tmp_path / "out")
    assert everything_under(tmp_path / "out") == []


def test_a_zip_with_a_corrupt_entry_is_refused(tmp_path: Path) -> None:
    data = bytearray(zip_bytes({"a.bin": PAYLOAD, "b.bin": PAYLOAD}))
    data[len(PAYLOAD) // 2] ^= 0xFF
    (tmp_path / "corrupt.zip").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"'a\.bin' is corrupt"):
        safe_extract(tmp_path / "corrupt.zip", tmp_path / "out")
    assert everything_under(tmp_path / "out") == []


def test_a_file_that_is_no_archive_is_refused(tmp_path: Path) -> None:
    (tmp_path / "page.zip").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(DataError, match="not a zip or tar archive"):
        safe_extract(tmp_path / "page.zip", tmp_path / "out")


# --- fetch -------------------------------------------------------------------------------


def served(tmp_path: Path, data: bytes = PAYLOAD) -> Path:
    path = tmp_path / "server" / "file.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_fetch_downloads_and_verifies_a_pinned_file(tmp_path: Path) -> None:
    source = served(tmp_path)
    remote = RemoteFile("file.bin", source.as_uri(), sha256_file(source))
    target = fetch(remote, tmp_path / "raw")
    assert target.read_bytes() == PAYLOAD
    assert everything_under(tmp_path / "raw") == ["file.bin"]


def test_fetch_refuses_a_wrong_checksum_and_keeps_nothing(tmp_path: Path) -> None:
    source = served(tmp_path)
    remote = RemoteFile("file.bin", source.as_uri(), "0" * 64)
    with pytest.raises(DataError, match=r"wrong SHA-256.*nothing was kept"):
        fetch(remote, tmp_path / "raw")
    assert everything_under(tmp_path / "raw") == []


def test_fetch_refuses_a_corrupted_cached_copy(tmp_path: Path) -> None:
    source = served(tmp_path)
    remote = RemoteFile("file.bin", source.as_uri(), sha256_file(source))
    fetch(remote, tmp_path / "raw").write_bytes(b"bit rot")
    with pytest.raises(
        DataError, match=r"SHA-256 is .* the file is corrupt; delete it to download it again$"
    ):
        fetch(remote, tmp_path / "raw")


def test_trust_on_first_use_records_the_hash_and_verifies_it_later(tmp_path: Path) -> None:
    source = served(tmp_path)
    remote = RemoteFile("file.bin", source.as_uri(), sha256=None)
    raw = tmp_path / "raw"
    fetch(remote, raw)
    assert (raw / "file.bin.sha256").read_text().strip() == sha256_file(source)
    # A later run re-verifies the cached copy against the recorded hash...
    (raw / "file.bin").write_bytes(b"tampered")
    with pytest.raises(DataError, match="the file is corrupt"):
        fetch(remote, raw)
    # ...and a fresh download of a file that changed upstream is refused too.
    (raw / "file.bin").unlink()
    source.write_bytes(b"a different release")
    with pytest.raises(DataError, match=r"file\.bin\.sha256\); nothing was kept"):
        fetch(remote, raw)
    assert everything_under(raw) == ["file.bin.sha256"]


def test_trust_on_first_use_still_checks_a_published_sha1(tmp_path: Path) -> None:
    source = served(tmp_path)
    good = RemoteFile("file.bin", source.as_uri(), None, hashlib.sha1(PAYLOAD).hexdigest())
    fetch(good, tmp_path / "good")
    assert (tmp_path / "good" / "file.bin.sha256").is_file()
    bad = RemoteFile("file.bin", source.as_uri(), None, "0" * 40)
    with pytest.raises(DataError, match=r"SHA-1 is .* expected the published"):
        fetch(bad, tmp_path / "bad")
    assert everything_under(tmp_path / "bad") == []


def test_a_malformed_pin_is_refused(tmp_path: Path) -> None:
    source = served(tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "file.bin.sha256").write_text("not a hash\n")
    with pytest.raises(DataError, match="expected one lowercase hex SHA-256"):
        fetch(RemoteFile("file.bin", source.as_uri(), None), raw)


def test_a_mismatching_pin_says_how_to_re_pin(tmp_path: Path) -> None:
    source = served(tmp_path)
    remote = RemoteFile("file.bin", source.as_uri(), sha256=None)
    raw = tmp_path / "raw"
    fetch(remote, raw)
    (raw / "file.bin").unlink()
    source.write_bytes(b"republished")
    pin = raw / "file.bin.sha256"
    with pytest.raises(DataError) as raised:
        fetch(remote, raw)
    assert str(raised.value).endswith(
        f"if the source has republished the file and you trust the new copy, delete {pin} "
        "and run again to re-pin it"
    )
    # Following the advice re-pins the new copy.
    pin.unlink()
    fetch(remote, raw)
    assert pin.read_text().strip() == sha256_file(source)
    # A published pin cannot be re-pinned: the message says the file is not the published one.
    published = RemoteFile("file.bin", source.as_uri(), "0" * 64)
    with pytest.raises(DataError, match="the pin is published with the code, so the file is not"):
        fetch(published, tmp_path / "other")


def test_a_first_copy_failing_its_structural_check_is_not_pinned(tmp_path: Path) -> None:
    source = served(tmp_path)
    remote = RemoteFile("file.bin", source.as_uri(), sha256=None)

    def check(path: Path) -> None:
        raise DataError(f"{path.name}: not the expected layout")

    with pytest.raises(DataError, match="not the expected layout"):
        fetch(remote, tmp_path / "raw", check)
    assert everything_under(tmp_path / "raw") == []
    # The same for a copy placed by hand without its pin.
    (tmp_path / "raw" / "file.bin").write_bytes(PAYLOAD)
    with pytest.raises(DataError, match=r"file\.bin: not the expected layout"):
        fetch(remote, tmp_path / "raw", check)
    assert everything_under(tmp_path / "raw") == ["file.bin"]


def test_an_archive_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    # 400 MB of zeros deflate to about 400 KB (1000x), as in the reported case.
    archive = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped,
        zipped.open("zeros.bin", "w", force_zip64=True) as entry,
    ):
        block = bytes(1 << 20)
        for _ in range(400):
            entry.write(block)
    size = archive.stat().st_size
    assert size < 500_000
    with pytest.raises(DataError) as raised:
        safe_extract(archive, tmp_path / "out")
    assert str(raised.value) == (
        f"{archive}: would expand to {400 << 20:,} bytes from {size:,} "
        f"({(400 << 20) / size:.0f}x); refused, the limits are {200 * 1024**3:,} bytes and "
        "100x (an archive bomb or not the expected file)"
    )
    assert everything_under(tmp_path / "out") == []


def test_a_tar_over_the_size_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "big.tar"
    archive.write_bytes(tar_bytes({"a.bin": PAYLOAD, "b.bin": PAYLOAD}))
    monkeypatch.setattr(download_module, "EXTRACT_MAX_BYTES", len(PAYLOAD))
    with pytest.raises(DataError, match=rf"would expand to {2 * len(PAYLOAD):,} bytes"):
        safe_extract(archive, tmp_path / "out")
    assert everything_under(tmp_path / "out") == []


def test_a_download_that_stalls_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local server that accepts the connection and never answers (no network)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    monkeypatch.setattr(download_module, "DOWNLOAD_TIMEOUT", 0.2)
    remote = RemoteFile("file.bin", f"http://127.0.0.1:{port}/file.bin", "0" * 64)
    try:
        with pytest.raises(DataError) as raised:
            fetch(remote, tmp_path / "raw")
    finally:
        server.close()
    assert str(raised.value) == (
        f"http://127.0.0.1:{port}/file.bin: no data for 0.2 s; the download timed out, "
        "nothing was kept"
    )
    assert everything_under(tmp_path / "raw") == []


def test_an_unreachable_url_is_one_clear_error(tmp_path: Path) -> None:
    remote = RemoteFile("file.bin", (tmp_path / "nowhere.bin").as_uri(), "0" * 64)
    with pytest.raises(DataError, match=r"nowhere\.bin: download failed \(.*\); nothing was kept"):
        fetch(remote, tmp_path / "raw")
