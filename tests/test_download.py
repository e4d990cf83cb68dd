"""Downloads against a local HTTP server: checksum, resume, corruption, unsafe archives."""

from __future__ import annotations

import hashlib
import io
import stat
import struct
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from featstore import config
from featstore import download as dl
from featstore.corpora import CORPORA, load_manifest
from featstore.corpora.base import METHODS, Source
from featstore.download import ChecksumError, DownloadInstructions, UnsafeArchiveError, download, fetch, safe_extract
from featstore.errors import CorpusError, SerError

RAVDESS_NAMES = ("Actor_01/03-01-01-01-01-01-01.wav", "Actor_01/03-01-05-02-01-01-01.wav",
                 "Actor_02/03-01-03-01-02-02-02.wav")


def wav_bytes(seconds: float = 0.2, sr: int = 16000) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def ravdess_zip() -> bytes:
    # Stored, not deflated, and noisy enough that half the file is well past the first chunk.
    noise = np.random.default_rng(0).integers(0, 255, 300_000, dtype=np.uint8).tobytes()
    return zip_bytes({**{name: wav_bytes() for name in RAVDESS_NAMES}, "README.bin": noise})


class Server:
    """A local HTTP server with Range support, a request log, and scripted failures."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop_first: dict[str, int] = {}   # path -> bytes sent before the first response is cut
        self.ignore_range = False
        self.log: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a stuck client cannot hold the test

            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.log.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                cut = server.drop_first.pop(self.path, None)
                if cut is not None:
                    self.wfile.write(data[start:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Config and data dir under tmp_path; no proxies between us and 127.0.0.1; no retry waits."""
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("SER_DATA", str(tmp_path / "data"))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(dl, "RETRY_WAIT", 0.0)


def wavs_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*.wav")) if path.exists() else []


def test_download_checks_unpacks_and_counts(server, ravdess_zip, tmp_path):
    server.files["/ravdess.zip"] = ravdess_zip
    res = download("ravdess", url=f"{server.url}/ravdess.zip", md5=hashlib.md5(ravdess_zip).hexdigest(),
                   progress=False, timeout=10)
    root = tmp_path / "data" / "ravdess"
    assert res.root == root and not res.skipped
    assert res.files == 4 and res.utterances == 3 and res.expected == 1440 and not res.complete
    assert "1437 missing" in res.summary()
    assert [p.relative_to(root).as_posix() for p in wavs_under(root)] == sorted(RAVDESS_NAMES)
    assert len(load_manifest("ravdess", root)) == 3
    assert res.archives and not res.archives[0].exists()      # the archive is removed once unpacked
    assert not (tmp_path / "data" / dl.STAGING).exists()
    assert res.hint is None and config.resolve_root("ravdess") == root

    again = download("ravdess", url=f"{server.url}/ravdess.zip", progress=False)
    assert again.skipped and again.utterances == 3
    assert len(server.log) == 1                               # nothing fetched the second time


def test_download_elsewhere_says_how_to_find_it(server, ravdess_zip, tmp_path):
    server.files["/r.zip"] = ravdess_zip
    res = download("ravdess", tmp_path / "elsewhere", url=f"{server.url}/r.zip",
                   sha256=hashlib.sha256(ravdess_zip).hexdigest(), progress=False, timeout=10)
    assert res.utterances == 3
    assert f"ser config set corpora.ravdess.root {tmp_path / 'elsewhere'}" in res.hint


def test_resume_after_interruption(server, ravdess_zip, tmp_path):
    half = len(ravdess_zip) // 2
    server.files["/ravdess.zip"] = ravdess_zip
    server.drop_first["/ravdess.zip"] = half
    url, md5 = f"{server.url}/ravdess.zip", hashlib.md5(ravdess_zip).hexdigest()
    with pytest.raises(SerError, match="run the same command again"):
        download("ravdess", url=url, md5=md5, progress=False, retries=0, timeout=10)
    part = tmp_path / "data" / dl.STAGING / "ravdess" / "ravdess.zip.part"
    assert part.stat().st_size == half
    assert wavs_under(tmp_path / "data" / "ravdess") == []

    res = download("ravdess", url=url, md5=md5, progress=False, retries=0, timeout=10)
    assert res.utterances == 3
    assert server.log == [("/ravdess.zip", None), ("/ravdess.zip", f"bytes={half}-")]


def test_fetch_retries_and_resumes_within_one_call(server, ravdess_zip, tmp_path):
    server.files["/f.zip"] = ravdess_zip
    server.drop_first["/f.zip"] = 1000
    out = fetch(f"{server.url}/f.zip", tmp_path / "f.zip", sha256=hashlib.sha256(ravdess_zip).hexdigest(),
                size=len(ravdess_zip), progress=False, retries=1, timeout=10)
    assert out.read_bytes() == ravdess_zip
    assert server.log[1] == ("/f.zip", "bytes=1000-")
    assert not (tmp_path / "f.zip.part").exists()


def test_server_ignoring_range_restarts_cleanly(server, ravdess_zip, tmp_path):
    server.files["/f.zip"] = ravdess_zip
    server.drop_first["/f.zip"] = 5000
    server.ignore_range = True
    with pytest.raises(SerError):
        fetch(f"{server.url}/f.zip", tmp_path / "f.zip", progress=False, retries=0, timeout=10)
    out = fetch(f"{server.url}/f.zip", tmp_path / "f.zip", md5=hashlib.md5(ravdess_zip).hexdigest(),
                progress=False, retries=0, timeout=10)
    assert server.log[1] == ("/f.zip", "bytes=5000-")     # asked to resume, got the whole file (200)
    assert out.read_bytes() == ravdess_zip                # rewritten from byte 0, not appended


def test_corrupt_download_is_deleted_and_nothing_unpacked(server, ravdess_zip, tmp_path):
    server.files["/ravdess.zip"] = ravdess_zip
    with pytest.raises(ChecksumError) as e:
        download("ravdess", url=f"{server.url}/ravdess.zip", md5="0" * 32, progress=False, timeout=10)
    assert e.value.expected == "0" * 32 and e.value.got == hashlib.md5(ravdess_zip).hexdigest()
    assert "expected md5 " + "0" * 32 in str(e.value) and "deleted" in str(e.value)
    assert not (tmp_path / "data" / "ravdess").exists()
    assert list((tmp_path / "data").rglob("*.zip*")) == []
    with pytest.raises(CorpusError):
        config.resolve_root("ravdess")                    # a failed download leaves no root behind


def test_wrong_size_on_server_stops_before_downloading(server, ravdess_zip, tmp_path):
    server.files["/f.zip"] = ravdess_zip
    with pytest.raises(ChecksumError, match=f"expected {len(ravdess_zip) + 1}"):
        fetch(f"{server.url}/f.zip", tmp_path / "f.zip", size=len(ravdess_zip) + 1, progress=False, timeout=10)
    assert not (tmp_path / "f.zip").exists()
    assert not (tmp_path / "f.zip.part").exists() or (tmp_path / "f.zip.part").stat().st_size == 0


def test_http_error_and_web_page_are_explained(server, tmp_path):
    with pytest.raises(SerError, match="HTTP 404"):
        fetch(f"{server.url}/missing.zip", tmp_path / "m.zip", progress=False, timeout=10)
    server.files["/login.zip"] = b"<!DOCTYPE html><html>please log in</html>"
    with pytest.raises(SerError, match="web page"):
        download("emodb", url=f"{server.url}/login.zip", progress=False, timeout=10)


def test_local_archive_is_unpacked_and_kept(ravdess_zip, tmp_path):
    archive = tmp_path / "mine.zip"
    archive.write_bytes(ravdess_zip)
    res = download("ravdess", tmp_path / "r", url=str(archive), progress=False)
    assert res.utterances == 3 and archive.read_bytes() == ravdess_zip


# -- unsafe archives ------------------------------------------------------------------------------

def lying_zip(entries: dict[str, bytes], liar: str, declared: int = 1024) -> bytes:
    """A deflated zip whose entry `liar` declares `declared` bytes (local and central headers)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    data = bytearray(buf.getvalue())
    name = liar.encode()
    local = data.find(b"PK\x03\x04")
    while data[local + 30:local + 30 + len(name)] != name:
        local = data.find(b"PK\x03\x04", local + 4)
    central = data.find(b"PK\x01\x02")
    while data[central + 46:central + 46 + len(name)] != name:
        central = data.find(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, local + 22, declared)
    struct.pack_into("<I", data, central + 24, declared)
    return bytes(data)


def test_entry_inflating_past_its_declared_size_is_one_line_and_leaves_nothing(tmp_path):
    big = "Actor_02/03-01-03-01-02-02-02.wav"
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(lying_zip({RAVDESS_NAMES[0]: wav_bytes(), big: bytes(50_000_000)}, big))
    assert zipfile.ZipFile(archive).getinfo(big).file_size == 1024
    target = tmp_path / "fresh" / "ravdess"
    with pytest.raises(SerError) as e:
        download("ravdess", target, url=str(archive), progress=False)
    assert "is damaged" in str(e.value) and "\n" not in str(e.value) and big in str(e.value)
    assert not (tmp_path / "fresh").exists()            # not the first entry, not a 0-byte file, no folder
    keep = tmp_path / "kept"
    (keep / "mine.txt").parent.mkdir()
    (keep / "mine.txt").write_text("x")
    with pytest.raises(SerError, match="is damaged"):
        safe_extract(archive, keep)
    assert _tree(keep) == ["mine.txt"]                  # what was there stays; what was unpacked goes

    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["download", "ravdess", "--url", str(archive), "--to", str(target)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.strip()] == [result.output.strip()]
    assert result.output.strip().startswith("error: ") and not (tmp_path / "fresh").exists()



def _tree(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*")) if path.exists() else []


def test_zip_slip_refused_and_nothing_written(tmp_path):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(zip_bytes({"ok/first.txt": b"fine", "../evil.txt": b"x", "/abs/evil.txt": b"x",
                                   "ok\\..\\..\\win.txt": b"x"}))
    target = tmp_path / "sandbox" / "target"
    with pytest.raises(UnsafeArchiveError) as e:
        safe_extract(archive, target)
    assert len(e.value.entries) == 3 and "Nothing was written" in str(e.value)
    assert _tree(target) == []                       # not even the safe entry before the bad ones
    assert not (tmp_path / "sandbox" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_zip_symlink_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", b"fine")
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../outside")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract(archive, tmp_path / "t")
    assert _tree(tmp_path / "t") == []


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _sym(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("bad", [
    _sym("escape", "../outside"),
    _sym("etc", "/etc"),
    _sym("hard", "../../etc/passwd", tarfile.LNKTYPE),
    (tarfile.TarInfo("/tmp/ser-test-evil.txt"), b"x"),
    (tarfile.TarInfo("sub/../../evil.txt"), b"x"),
])
def test_tar_escapes_refused(tmp_path, bad):
    archive = _tar(tmp_path / "bad.tar.gz", [(tarfile.TarInfo("ok.txt"), b"fine"), bad])
    target = tmp_path / "sandbox" / "target"
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, target)
    assert not (tmp_path / "sandbox").exists()  # the folders it made for the target are gone too
    assert not Path("/tmp/ser-test-evil.txt").exists()


def test_tar_write_through_archive_symlink_refused(tmp_path):
    archive = _tar(tmp_path / "bad.tar.gz", [_sym("d", "inner"), (tarfile.TarInfo("d/x.txt"), b"x")])
    with pytest.raises(UnsafeArchiveError, match="inside a symbolic link"):
        safe_extract(archive, tmp_path / "t")
    assert _tree(tmp_path / "t") == []


def test_safe_tar_and_cp437_zip_names_unpack(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", [(tarfile.TarInfo("a/b.txt"), b"hello"), _sym("a/c", "b.txt")])
    files = safe_extract(archive, tmp_path / "t")
    assert files == [tmp_path / "t" / "a" / "b.txt"] and (tmp_path / "t" / "a" / "c").read_bytes() == b"hello"

    # CaFE's zip names are CP437 (no UTF-8 flag): byte 0x8A is "è" in CP437.
    raw = zip_bytes({"CaFE_48k/ColXre/Faible/01-C-1-1.wav": wav_bytes()}).replace(b"ColXre", b"Col\x8are")
    (tmp_path / "cafe.zip").write_bytes(raw)
    res = download("cafe", tmp_path / "cafe", url=str(tmp_path / "cafe.zip"), progress=False)
    assert (tmp_path / "cafe" / "CaFE_48k" / "Colère" / "Faible" / "01-C-1-1.wav").is_file()
    assert res.utterances == 1


def test_unsafe_archive_via_download_writes_nothing_outside(server, tmp_path):
    server.files["/bad.zip"] = zip_bytes({"Actor_01/03-01-01-01-01-01-01.wav": wav_bytes(), "../../evil.wav": b"x"})
    with pytest.raises(UnsafeArchiveError):
        download("ravdess", url=f"{server.url}/bad.zip", progress=False, timeout=10)
    assert list(tmp_path.rglob("*.wav")) == []


# -- corpora ser cannot fetch ---------------------------------------------------------------------

def test_licensed_corpus_gives_instructions(tmp_path):
    with pytest.raises(DownloadInstructions) as e:
        download("iemocap", progress=False)
    msg = str(e.value)
    assert "sail.usc.edu" in msg and str(tmp_path / "data" / "iemocap") in msg
    assert "ser config set corpora.iemocap.root" in msg


def test_cremad_without_git_lfs_gives_the_commands(monkeypatch, tmp_path):
    monkeypatch.setattr(dl, "git_lfs_available", lambda: False)
    with pytest.raises(DownloadInstructions) as e:
        download("cremad", progress=False)
    msg = str(e.value)
    assert "GIT_LFS_SKIP_SMUDGE=1 git clone --depth 1 https://github.com/CheyneyComputerScience/CREMA-D" in msg
    assert "lfs pull --include 'AudioWAV/*'" in msg


def test_source_table_covers_every_corpus():
    rows = {r["corpus"]: r for r in dl.sources()}
    assert set(rows) == set(CORPORA)
    assert rows["ravdess"]["checksum"] == "md5" and "1188976" in rows["ravdess"]["where"]
    assert rows["shemo"]["checksum"] == "sha256"
    assert rows["iemocap"]["method"] == "manual" and rows["cremad"]["method"] == "git-lfs"
    for name, corpus in CORPORA.items():
        source = corpus.source
        assert source.method in METHODS and source.verified and source.licence, name
        assert all(a.url.startswith(("http://", "https://")) for a in source.archives), name
        assert bool(source.archives) == (source.method == "http"), name
        assert rows[name]["licence"] == source.licence and rows[name]["method"] == source.method
    with pytest.raises(ValueError, match="'ftp'"):
        Source("ftp", "https://example.org", "CC0")
    # one spelling per corpus: the page on the class is the page the table and the archives use
    assert CORPORA["ravdess"].source.page == "https://zenodo.org/records/1188976"
    assert CORPORA["ravdess"].source.archives[0].url.startswith(CORPORA["ravdess"].source.page + "/files/")
    assert CORPORA["cafe"].source.archives[0].url.startswith(CORPORA["cafe"].source.page + "/files/")


def test_existing_symlink_in_target_is_not_followed_out(tmp_path):
    target, outside = tmp_path / "t", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    (target / "link").symlink_to(outside)
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"link/x.txt": b"x"}))
    with pytest.raises(UnsafeArchiveError, match="existing symlink"):
        safe_extract(archive, target)
    assert _tree(outside) == []
