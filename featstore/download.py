"""Downloading corpora: ``ser download CORPUS [--to DIR]``.

Each corpus class says how it can be obtained (`Corpus.source`, a `featstore.corpora.Source`):

- ``http``: one or more archives fetched over HTTP(S) by `fetch` (streamed, resumable through a
  ``.part`` file and an HTTP Range request, size- and checksum-checked when those are known),
  then unpacked by `safe_extract` (every entry checked before anything is written);
- ``git-lfs``: CREMA-D lives in a Git-LFS repository; cloned without LFS content, then
  ``git lfs pull --include AudioWAV/*`` (needs git-lfs; otherwise instructions are raised);
- ``manual``: licensed or registration-only corpora; `download` raises `DownloadInstructions`
  saying where to obtain the corpus and where to put it (``own``: your CSV corpus, likewise).

After unpacking, the corpus loader reads the result and the utterance count is compared with the
corpus' `expected_count` (`DownloadResult.summary`). ``url=`` replaces the table's archive(s) with
one URL (or a local archive path / ``file://`` URL: unpacked in place, never deleted), which is
how a mirror, a manually downloaded file or the tests' local server is used.

Each `Source.verified` says how its URL, size and checksum were checked; "(U)" = unverified.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlparse
from urllib.request import Request, url2pathname, urlopen

from featstore import config
from featstore.corpora.base import Archive, Corpus, Source
from featstore.errors import CorpusError, SerError
from featstore.units import human_size

CHUNK = 1 << 20
USER_AGENT = "ser-download/0.1 (Python urllib)"
MARKER = ".ser-download.json"     # written into the corpus root once a download is complete
STAGING = ".ser-downloads"        # archives are fetched into <root's parent>/.ser-downloads/<corpus>/
RETRY_WAIT = 2.0                  # seconds before retry k is k * RETRY_WAIT


# -- what the CLI prints --------------------------------------------------------------------------

SOURCE_COLUMNS = ("corpus", "method", "where", "size", "checksum", "licence", "verified")


def sources() -> list[dict[str, str]]:
    """One row per registered corpus (keys `SOURCE_COLUMNS`), for ``ser download --list``."""
    from featstore.corpora import REGISTRY

    rows = []
    for corpus in REGISTRY:
        s = corpus.source
        if s.method == "http":
            where = " + ".join(a.url for a in s.archives)
            sizes = [a.size for a in s.archives]
            size = human_size(sum(sizes)) if all(sizes) else s.approx_size
            checksum = ", ".join(sorted({"sha256" if a.sha256 else "md5" if a.md5 else "none" for a in s.archives}))
        elif s.method == "git-lfs":
            where, size, checksum = f"{s.repo} ({s.lfs_include})", s.approx_size, "git-lfs (sha256 per file)"
        else:
            where, size, checksum = s.page, "", ""
        rows.append(dict(corpus=corpus.name, method=s.method, where=where, size=size, checksum=checksum,
                         licence=s.licence, verified=s.verified))
    return rows


class DownloadInstructions(SerError):
    """A corpus ser cannot fetch by itself; the message says how to obtain it and where to put it."""

    def __init__(self, corpus: str, reason: str, lines: list[str], target: Path):
        self.corpus, self.reason, self.lines, self.target = corpus, reason, lines, target
        body = "\n".join(f"  {line}" for line in lines)
        super().__init__(
            f"{corpus} cannot be downloaded by ser: {reason}.\nHow to get it:\n{body}\n"
            f"If you keep it elsewhere: ser config set corpora.{corpus}.root /path/to/{corpus}"
        )


class ChecksumError(SerError):
    """A downloaded file whose size or checksum is not the published one (the file is deleted)."""

    def __init__(self, message: str, *, algorithm: str, expected: str, got: str):
        self.algorithm, self.expected, self.got = algorithm, expected, got
        super().__init__(message)


class UnsafeArchiveError(SerError):
    """An archive with entries that would land outside the target directory (nothing is written)."""

    def __init__(self, message: str, entries: list[str]):
        self.entries = entries
        super().__init__(message)


# -- download -------------------------------------------------------------------------------------

@dataclass
class DownloadResult:
    """What `download` did: where the corpus now is and how complete the loader finds it."""

    corpus: str
    root: Path
    archives: list[Path] = field(default_factory=list)  # fetched archives (deleted unless kept)
    files: int = 0               # files unpacked (or pulled) this time
    utterances: int = 0          # utterances the loader reads from `root`
    expected: int = 0            # the complete release's count (Corpus.expected_count)
    problems: int = 0            # files the loader skipped
    skipped: bool = False        # already downloaded: nothing fetched
    hint: str | None = None      # how to make other commands find `root`, when they would not

    @property
    def complete(self) -> bool:
        return not self.expected or self.utterances >= self.expected

    def summary(self) -> str:
        what = "already present" if self.skipped else f"downloaded, {self.files} files unpacked"
        text = f"{self.corpus}: {what} in {self.root}; {self.utterances} utterances"
        text += f" (expected {self.expected})" if self.expected else ""
        if not self.complete:
            text += f"; {self.expected - self.utterances} missing"
        if self.problems:
            text += f"; {self.problems} files skipped (see `ser manifest --corpus {self.corpus} --root {self.root}`)"
        if self.hint:
            text += f"\n{self.hint}"
        return text


def download(corpus: str, to: str | Path | None = None, *, url: str | None = None, md5: str | None = None,
             sha256: str | None = None, size: int | None = None, force: bool = False,
             keep_archive: bool = False, progress: bool = True, retries: int = 2,
             timeout: float = 60.0) -> DownloadResult:
    """Fetch `corpus`, unpack it into `to` (default ``<data dir>/<corpus>``) and check it.

    `url` (an http(s) URL, a ``file://`` URL or a local archive path) replaces the table's
    archives; `md5`/`sha256`/`size` then describe it (with no `url` they override the table's
    values for a single-archive corpus). A root that holds a completed download is not fetched
    again unless `force`. Raises DownloadInstructions for corpora ser cannot fetch, ChecksumError
    for a corrupt download, UnsafeArchiveError for an archive escaping the target, SerError else.
    """
    from featstore.corpora import get_corpus

    corp = get_corpus(corpus)
    name = corp.name
    target = Path(to).expanduser() if to else config.data_dir() / name
    source = corp.source
    if url is not None:
        archives: tuple[Archive, ...] = (Archive(url, _filename(url, name), size=size, md5=md5, sha256=sha256),)
    elif source.method == "own":
        raise DownloadInstructions(name, "it is your own corpus", corp.how_to_get(target), target)
    elif source.method == "manual":
        raise DownloadInstructions(name, source.licence, corp.how_to_get(target), target)
    elif source.method == "git-lfs":
        return _download_git_lfs(corp, target, force=force)
    else:
        archives = source.archives
        if (md5 or sha256 or size) and len(archives) == 1:
            a = archives[0]
            archives = (Archive(a.url, a.filename, size=size or a.size, md5=md5 or (None if sha256 else a.md5),
                                sha256=sha256 or (None if md5 else a.sha256)),)

    if (target / MARKER).exists() and not force:
        return _check(name, target, DownloadResult(name, target, skipped=True))
    if target.exists() and not target.is_dir():
        raise SerError(f"{target} is a file, not a directory; pass --to DIR for the corpus root")
    # Staged beside the root, not in it: a failed download must not leave a root that looks present.
    staging = target.absolute().parent / STAGING / name
    fetched: list[Path] = []
    paths: list[Path] = []
    for a in archives:  # every archive fetched and verified before anything is unpacked
        local = _local_path(a.url)
        if local is not None:
            if not local.is_file():
                raise SerError(f"{local} does not exist; pass the path of the archive you downloaded")
            _verify(local, a.url, md5=a.md5, sha256=a.sha256, size=a.size, delete=False)
            paths.append(local)
        else:
            path = fetch(a.url, staging / a.filename, md5=a.md5, sha256=a.sha256, size=a.size,
                         progress=progress, retries=retries, timeout=timeout)
            fetched.append(path)
            paths.append(path)
    fresh = not target.exists()
    try:
        files = sum(len(safe_extract(p, target, progress=progress)) for p in paths)
    except BaseException:
        if fresh:  # a later archive failed: the earlier ones' files must not look like a corpus
            shutil.rmtree(target, ignore_errors=True)
        raise
    result = _check(name, target, DownloadResult(name, target, archives=fetched, files=files))
    (target / MARKER).write_text(json.dumps({
        "corpus": name, "archives": [a.url for a in archives], "files": files,
        "utterances": result.utterances, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, indent=1) + "\n", encoding="utf-8")
    if not keep_archive:
        for path in fetched:
            path.unlink(missing_ok=True)
        for folder in (staging, staging.parent):  # only when empty: another download may be half-way
            with contextlib.suppress(OSError):
                folder.rmdir()
    return result


def _check(name: str, target: Path, result: DownloadResult) -> DownloadResult:
    """Run the corpus loader over `target`; fill in counts and the config hint."""
    from featstore.corpora import get_corpus

    corp = get_corpus(name)
    try:
        manifest = corp.load(target)
    except CorpusError as e:
        raise SerError(f"{name}: the download is in {target} but the loader cannot read it ({e}); the "
                       f"archive's layout may have changed: point --root at the folder holding "
                       f"{corp.layout_hint}, and please report it") from e
    result.utterances, result.problems, result.expected = len(manifest), len(manifest.problems), corp.expected_count
    looked = [p for _, p in config.candidate_roots(name) if p is not None]
    if not any(_same(target, p) for p in looked):
        result.hint = (f"ser will not find it there by itself; run: "
                       f"ser config set corpora.{name}.root {target.absolute()}")
    return result


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _filename(url: str, corpus: str) -> str:
    local = _local_path(url)
    if local is not None:
        return local.name
    name = unquote(Path(urlparse(url).path).name)
    return name if name and "." in name else f"{corpus}-download"


def _local_path(url: str) -> Path | None:
    """The file a ``file://`` URL or a plain path names; None for a network URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme in ("http", "https", "ftp"):
        return None
    return Path(url).expanduser()


# -- git-lfs (CREMA-D) ----------------------------------------------------------------------------

def git_lfs_available() -> bool:
    """True if `git` and its `git lfs` extension both run."""
    git = shutil.which("git")
    if git is None:
        return False
    try:
        return subprocess.run([git, "lfs", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _git_lfs_commands(source: Source, target: Path) -> list[str]:
    return [f"GIT_LFS_SKIP_SMUDGE=1 git clone --depth 1 {source.repo} {target}",
            f"git -C {target} lfs pull --include '{source.lfs_include}'"]


def _download_git_lfs(corp: Corpus, target: Path, *, force: bool) -> DownloadResult:
    name, source = corp.name, corp.source
    if (target / MARKER).exists() and not force:
        return _check(name, target, DownloadResult(name, target, skipped=True))
    if not git_lfs_available():
        raise DownloadInstructions(
            name, "it is stored with Git LFS and `git lfs` is not installed",
            ["Install git-lfs (https://git-lfs.com; e.g. `apt install git-lfs`, then `git lfs install`) "
             f"and run `ser download {name}` again, or run by hand:", *_git_lfs_commands(source, target)],
            target)
    git = shutil.which("git")
    if not (target / ".git").is_dir():
        if target.exists() and any(target.iterdir()):
            raise SerError(f"{target} exists and is not a clone of {source.repo}; empty it or pass --to DIR")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Without SKIP_SMUDGE the clone would fetch every LFS file (videos included), not only AudioWAV.
        _run([git, "clone", "--depth", "1", source.repo, str(target)], {"GIT_LFS_SKIP_SMUDGE": "1"}, name, target)
    _run([git, "-C", str(target), "lfs", "pull", "--include", source.lfs_include], {}, name, target)
    files = sum(1 for _ in (target / source.lfs_include.split("/")[0]).glob("*"))
    result = _check(name, target, DownloadResult(name, target, files=files))
    (target / MARKER).write_text(json.dumps({"corpus": name, "repo": source.repo, "files": files,
                                             "utterances": result.utterances}, indent=1) + "\n", encoding="utf-8")
    return result


def _run(cmd: list[str], env: dict, name: str, target: Path) -> None:
    try:
        rc = subprocess.run(cmd, env={**os.environ, **env}).returncode
    except OSError as e:
        rc, err = -1, e.strerror
    else:
        err = f"exit status {rc}"
    if rc != 0:
        raise SerError(
            f"`{' '.join(cmd)}` failed ({err}). Run `ser download {name}` again to resume; if git "
            f"reports that the repository is over its LFS data quota, GitHub is refusing downloads for now: "
            f"try later, or fetch AudioWAV/ from a mirror into {target} (beside VideoDemographics.csv)")


# -- fetch ----------------------------------------------------------------------------------------

class _Interrupted(Exception):
    """The transfer stopped early; the .part file keeps what arrived."""


def fetch(url: str, dest: str | Path, *, md5: str | None = None, sha256: str | None = None,
          size: int | None = None, progress: bool = True, retries: int = 2, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, resuming `<dest>.part` from an earlier attempt; returns `dest`.

    A partial file is continued with an HTTP Range request (guarded by If-Range, so a file that
    changed on the server starts over); a server that answers a Range request with the whole file
    (200) restarts the download cleanly. An interrupted transfer is retried `retries` times, then
    raises SerError (the .part file is kept for the next run). When `size`/`md5`/`sha256` are
    given the finished file is checked; a mismatch deletes it and raises ChecksumError. An
    existing `dest` that passes the checks is returned without downloading.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        try:
            return _verify(dest, url, md5=md5, sha256=sha256, size=size)
        except ChecksumError:
            pass  # deleted by _verify: download it afresh
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, size, progress, timeout)
            break
        except _Interrupted as e:
            if attempt == retries:
                have = part.stat().st_size if part.exists() else 0
                raise SerError(f"download of {url} failed: {e} ({human_size(have)} kept in {part}); check the "
                               f"network and run the same command again: it resumes where it stopped") from e
            time.sleep(RETRY_WAIT * (attempt + 1))
    os.replace(part, dest)
    _meta_path(part).unlink(missing_ok=True)
    return _verify(dest, url, md5=md5, sha256=sha256, size=size)


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _fetch_once(url: str, part: Path, expected_size: int | None, progress: bool, timeout: float) -> None:
    meta_path = _meta_path(part)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    have = part.stat().st_size if part.exists() else 0
    if have and (meta.get("url") != url or (expected_size is not None and have > expected_size)):
        have = 0  # another file's leftovers
    if expected_size is not None and have == expected_size:
        return
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if meta.get("validator"):
            headers["If-Range"] = meta["validator"]
    try:
        resp = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and have:  # range not satisfiable: stale part file; start over
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            return _fetch_once(url, part, expected_size, progress, timeout)
        raise SerError(f"{url}: HTTP {e.code} {e.reason}; the file may have moved: check the corpus' page "
                       f"(`ser download --list`) and pass the new address with --url") from e
    except (URLError, OSError, http.client.HTTPException) as e:
        raise _Interrupted(f"cannot reach the server ({getattr(e, 'reason', e)})") from e
    with resp:
        status = resp.status
        if have and status == 206:
            start, total = _content_range(resp.headers.get("Content-Range", ""))
            if start != have:
                part.unlink(missing_ok=True)  # the next attempt starts over
                raise _Interrupted(f"server resumed at byte {start}, not {have}")
            mode = "ab"
        else:  # 200: a fresh download, or a server that ignores Range: start from byte 0
            have, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if expected_size is not None and total is not None and total != expected_size:
            raise ChecksumError(
                f"{url} is {total} bytes on the server, expected {expected_size}: the file has changed; "
                f"check the corpus' page (`ser download --list`) and pass --url/--md5 for the new file",
                algorithm="size", expected=str(expected_size), got=str(total))
        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        meta_path.write_text(json.dumps({"url": url, "validator": validator, "total": total}), encoding="utf-8")
        with part.open(mode) as f, _progress_bar(progress, part.name[:-len(".part")], total, have) as advance:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (http.client.HTTPException, OSError) as e:
                    raise _Interrupted(f"connection lost ({type(e).__name__})") from e
                if not chunk:
                    break
                f.write(chunk)
                have += len(chunk)
                advance(len(chunk))
    if total is not None and have < total:
        raise _Interrupted(f"connection closed after {have} of {total} bytes")


def _content_range(value: str) -> tuple[int, int | None]:
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if not m:
        return -1, None
    return int(m.group(1)), (int(m.group(3)) if m.group(3) != "*" else None)


@contextlib.contextmanager
def _progress_bar(enabled: bool, name: str, total: int | None, completed: int):
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn()) as bar:
        task = bar.add_task(name, total=total, completed=completed)
        yield lambda n: bar.advance(task, n)


def _verify(path: Path, url: str, *, md5: str | None, sha256: str | None, size: int | None,
            delete: bool = True) -> Path:
    """Check `path`'s size and checksums; a mismatch deletes it (if `delete`) and raises ChecksumError."""
    fix = ("The file was deleted. Run the same command again to download it afresh; if the check fails "
           "again, the file on the server is not the one ser knows: pass the published checksum with "
           "--md5/--sha256 (or download it by hand and pass its path with --url)") if delete else (
           "Download it again, or pass the right checksum")
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        if delete:
            path.unlink()
        raise ChecksumError(f"{path.name} from {url} has {got_size} bytes, expected {size}. {fix}",
                            algorithm="size", expected=str(size), got=str(got_size))
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if not expected:
            continue
        got = file_hash(path, algorithm)
        if got != expected.strip().lower():
            if delete:
                path.unlink()
            raise ChecksumError(f"{path.name} from {url} is corrupt: expected {algorithm} {expected}, got {got}. {fix}",
                                algorithm=algorithm, expected=expected, got=got)
    return path


def file_hash(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# -- safe extraction ------------------------------------------------------------------------------

def safe_extract(archive: str | Path, target: str | Path, *, progress: bool = False) -> list[Path]:
    """Unpack a zip or tar(.gz/.bz2/.xz) `archive` into `target`; returns the files written.

    Every entry is checked before anything is written. Refused (UnsafeArchiveError, nothing
    written): absolute paths, ``..`` components, entries that resolve outside `target` through an
    existing symlink, any symlink in a zip, tar symlinks that are absolute or contain ``..``, tar
    hard links to such paths, entries under a symlink of the archive, and device/FIFO entries.
    Zip names are kept as `zipfile` decodes them (CP437 unless the entry is flagged UTF-8, as in
    CaFE); the corpus loaders read file names, not folder names.
    """
    archive, target = Path(archive), Path(target)
    new_dirs = [p for p in (target, *target.absolute().parents) if not p.exists()]  # deepest first
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    made: list[Path] = []  # files and folders this call creates, in order (undone on failure)
    try:
        if zipfile.is_zipfile(archive):
            return _unpack_zip(archive, root, made, progress)
        if _is_tar(archive):
            return _unpack_tar(archive, root, made, progress)
    except BaseException as e:
        _undo(made, new_dirs)
        if isinstance(e, _DAMAGED):
            raise SerError(f"{archive} is damaged ({_first_line(e)}); nothing was left in {target}: delete the "
                           f"archive and download it again, or pass a good copy with --url") from e
        if isinstance(e, OSError):
            raise SerError(f"cannot unpack {archive} into {target} ({e.strerror or e}); nothing was left there: "
                           f"check free space and permissions, or pass --to DIR") from e
        raise
    _undo([], new_dirs)
    with open(archive, "rb") as f:
        head = f.read(512).lstrip().lower()
    looks = " (it looks like a web page: the server sent an error or login page)" if head.startswith(
        (b"<!doctype", b"<html")) else ""
    raise SerError(f"{archive} is not a zip or tar archive{looks}; delete it and download again, or pass the "
                   f"right file with --url")


# What a corrupt archive raises while unpacking: bad CRC or an entry larger than it declares
# (BadZipFile), truncated or garbled streams, unknown compression methods, encrypted entries.
_DAMAGED = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, NotImplementedError, RuntimeError)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _unpack_zip(archive: Path, root: Path, made: list[Path], progress: bool) -> list[Path]:
    with zipfile.ZipFile(archive) as zf:
        plan = _plan_zip(zf, root, archive)
        _check_space(archive, root, sum(info.file_size for info, _ in plan))
        written = []
        for info, dest in _iter(plan, progress, f"unpacking {archive.name}"):
            _make_dirs(dest if info.is_dir() else dest.parent, made)
            if info.is_dir():
                continue
            made.append(dest)
            # zipfile stops at the declared size and checks the CRC: an entry that inflates
            # beyond what it declares raises BadZipFile instead of filling the disk.
            with zf.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            written.append(dest)
        return written


def _unpack_tar(archive: Path, root: Path, made: list[Path], progress: bool) -> list[Path]:
    with tarfile.open(archive, "r:*") as tf:
        members = _plan_tar(tf, root, archive)
        _check_space(archive, root, sum(m.size for m in members if m.isfile()))
        for m in _iter(members, progress, f"unpacking {archive.name}"):
            dest = root / m.name
            _make_dirs(dest if m.isdir() else dest.parent, made)
            if not m.isdir():
                made.append(dest)
            tf.extract(m, root, filter="data")  # the data filter checks once more while writing
        return [root / m.name for m in members if m.isfile()]


def _make_dirs(folder: Path, made: list[Path]) -> None:
    """`mkdir -p folder`, recording every folder it creates in `made` (outermost first)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    made.extend(reversed(missing))


def _undo(made: list[Path], new_dirs: list[Path]) -> None:
    """Remove what an unpack that failed half-way created: files, then folders (deepest first)."""
    for path in [*reversed(made), *new_dirs]:
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()  # only when empty: never a folder that held something before
            else:
                path.unlink(missing_ok=True)


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _iter(items: list, enabled: bool, description: str):
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=description, transient=True)


def _member_path(root: Path, name: str) -> tuple[Path | None, str | None]:
    """Where entry `name` would be written under `root`, or (None, why it is refused)."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"[A-Za-z]:", norm):
        return None, "absolute path"
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "'..' in the path"
    dest = root.joinpath(*parts)
    if not dest.resolve().is_relative_to(root):
        return None, "resolves outside the target through an existing symlink"
    return dest, None


def _refuse(archive: Path, root: Path, problems: list[str]) -> None:
    shown = "\n".join(f"  - {p}" for p in problems[:10])
    more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    raise UnsafeArchiveError(
        f"{archive}: refused to unpack into {root}; {len(problems)} unsafe entries:\n{shown}{more}\n"
        f"Nothing was written. This is not the archive ser expects (damaged or tampered): delete it "
        f"and download it again from the corpus' official page", problems)


def _plan_zip(zf: zipfile.ZipFile, root: Path, archive: Path) -> list[tuple[zipfile.ZipInfo, Path]]:
    plan, problems = [], []
    for info in zf.infolist():
        if stat.S_ISLNK(info.external_attr >> 16):
            problems.append(f"{info.filename}: symbolic link (not allowed in zip archives)")
            continue
        dest, why = _member_path(root, info.filename)
        if why:
            problems.append(f"{info.filename}: {why}")
        elif dest != root:
            plan.append((info, dest))
    if problems:
        _refuse(archive, root, problems)
    return plan


def _plan_tar(tf: tarfile.TarFile, root: Path, archive: Path) -> list[tarfile.TarInfo]:
    members, problems = [], []
    links: set[tuple[str, ...]] = set()
    for m in tf.getmembers():
        dest, why = _member_path(root, m.name)
        parts = tuple(p for p in m.name.replace("\\", "/").split("/") if p not in ("", "."))
        if why:
            problems.append(f"{m.name}: {why}")
            continue
        if any(parts[:i] in links for i in range(1, len(parts))):
            problems.append(f"{m.name}: inside a symbolic link of the archive")
            continue
        if m.issym():
            target = m.linkname.replace("\\", "/")
            if target.startswith("/") or ".." in target.split("/"):
                problems.append(f"{m.name}: symbolic link to {m.linkname} (points outside or upwards)")
                continue
            links.add(parts)
        elif m.islnk():
            _, why = _member_path(root, m.linkname)
            if why:
                problems.append(f"{m.name}: hard link to {m.linkname} ({why})")
                continue
        elif not (m.isfile() or m.isdir()):
            problems.append(f"{m.name}: device or FIFO entry")
            continue
        if dest != root:
            members.append(m)
    if problems:
        _refuse(archive, root, problems)
    return members


def _check_space(archive: Path, root: Path, needed: int) -> None:
    free = shutil.disk_usage(root).free
    if needed > free:
        raise SerError(f"unpacking {archive.name} needs {human_size(needed)} but {root} has {human_size(free)} "
                       f"free; free some space or pass --to DIR on a bigger disk")
