"""``distillbench data download NAME``: fetch the official files, verified by md5.

A file is streamed to ``<name>.part`` and renamed only after its checksum matches, so a
complete-looking file is always a verified one. An interrupted download keeps its ``.part`` and
the next call resumes it with an HTTP Range request (or restarts if the server ignores ranges);
a checksum mismatch deletes the partial file. Archives (CIFAR) are unpacked after verification.
Network failures raise ``DownloadError`` with one line naming the URL and the folder to fill by
hand. ``mirror`` replaces the official host with one serving the same file names.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from distillbench_builtin.datasets.catalog import CATALOG, RemoteFile, data_dir

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed; the message is one line saying what and what to do."""


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(name: str, root: str | None = None, mirror: str | None = None,
             log: Callable[[str], None] = print, timeout: float = 30.0) -> Path:
    """Fetch every official file of dataset ``name`` into its folder; return the folder."""
    if name not in CATALOG:
        raise KeyError(name)
    spec = CATALOG[name]
    folder = data_dir(root) / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    for remote in spec.remote:
        url = f"{mirror.rstrip('/')}/{remote.name}" if mirror else remote.url
        dest = folder / remote.name
        if dest.exists() and md5sum(dest) == remote.md5:
            log(f"{dest}: present, checksum ok")
        else:
            _fetch(url, dest, remote, log, timeout)
        if remote.extract_to is not None:
            _extract(dest, folder / remote.extract_to, log)
    return folder


def _fetch(url: str, dest: Path, remote: RemoteFile, log, timeout: float) -> None:
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have > 0 and response.status == 206
            expected = response.headers.get("Content-Length")
            log(f"{url}: {'resuming at ' + str(have) + ' bytes' if resumed else 'downloading'}")
            received = 0
            with open(part, "ab" if resumed else "wb") as out:
                while block := response.read(CHUNK):
                    out.write(block)
                    received += len(block)
            if expected is not None and received < int(expected):
                # http.client reports a dropped connection as a short read, not an error
                raise ConnectionError(f"connection closed after {received} of {expected} bytes")
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the range starts at the end: the partial file is complete
            pass
        else:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; download it by hand into {dest.parent}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        kept = f" (partial file kept: {part}; run again to resume)" if part.exists() else ""
        raise DownloadError(f"cannot download {url}: {reason}; offline? put {remote.name} into "
                            f"{dest.parent} by hand{kept}") from None
    actual = md5sum(part)
    if actual != remote.md5:
        part.unlink()
        raise DownloadError(f"{url}: checksum mismatch (md5 {actual}, expected {remote.md5}); "
                            "the partial file was removed, run again")
    os.replace(part, dest)
    log(f"{dest}: checksum ok")


def _extract(archive: Path, target: Path, log) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    log(f"{archive}: unpacked into {target}")
