"""A distro mirror on loopback for the kernel-feed tests: a directory served by Python's ``http.server``
(Last-Modified and ``If-Modified-Since`` → 304, as a static mirror answers), into which tests drop new
``kernel-devel`` packages or, for hostile feeds, metadata written by hand."""

import gzip
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPOMD = """<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1</revision>
  <data type="primary">
    <checksum type="sha256">{checksum}</checksum>
    <open-checksum type="sha256">{checksum}</open-checksum>
    <location href="{location}"/>
    <timestamp>1700000000</timestamp>
    <size>{size}</size>
    <open-size>{size}</open-size>
  </data>
</repomd>
"""

PRIMARY_PACKAGE = """<package type="rpm">
  <name>kernel-devel</name><arch>{arch}</arch>
  <version epoch="0" ver="{version}" rel="{release}"/>
  <checksum type="sha256" pkgid="YES">{digest}</checksum>
  <summary>kernel sources</summary><description>kernel sources</description><packager/><url/>
  <time file="1700000000" build="1700000000"/>
  <size package="1" installed="1" archive="1"/>
  <location href="Packages/kernel-devel.rpm"/>
  <format><rpm:license>GPLv2</rpm:license></format>
</package>
"""


class _Recorded(SimpleHTTPRequestHandler):
    """Logs nothing; remembers each answer as ``(path, status)`` in ``answers``; adds ``headers`` to each."""

    answers: list[tuple[str, int]]
    headers_added: dict[str, str]

    def end_headers(self) -> None:
        for name, value in self.headers_added.items():
            self.send_header(name, value)
        super().end_headers()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.answers.append((self.path, int(code)))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        pass


@contextmanager
def serve(
    directory: Path, answers: list[tuple[str, int]] | None = None, headers: dict[str, str] | None = None
) -> Iterator[str]:
    """``directory`` over HTTP on a free loopback port, while the block runs; yields its URL. Each answer is
    appended to ``answers`` as ``(path, status)`` and carries ``headers`` (a hostile mirror's, say)."""
    handler = type(
        "Handler",
        (_Recorded,),
        {"answers": answers if answers is not None else [], "headers_added": headers or {}},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def age(repo: Path, seconds: float = 3600) -> None:
    """Date the repository's files ``seconds`` back, as a mirror last updated that long ago."""
    past = time.time() - seconds
    for path in repo.rglob("*"):
        os.utime(path, (past, past))


def primary_xml(kernels: list[tuple[str, str, str]]) -> bytes:
    """Primary metadata listing ``kernel-devel`` (version, release, arch) entries, however odd."""
    packages = "".join(
        PRIMARY_PACKAGE.format(
            version=version, release=release, arch=arch, digest=hashlib.sha256(release.encode()).hexdigest()
        )
        for version, release, arch in kernels
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="http://linux.duke.edu/metadata/common" '
        f'xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="{len(kernels)}">\n{packages}</metadata>\n'
    ).encode()


def write_metadata(
    repo: Path,
    primary: bytes,
    checksum: str | None = None,
    declared_size: int | None = None,
    location: str = "",
    compressed: bytes | None = None,
) -> None:
    """``repodata/`` by hand: ``primary`` gzipped (or the bytes ``compressed``, a corrupt stream say), and a
    repomd.xml naming it (with a wrong checksum, a false size or another location when given)."""
    compressed = compressed if compressed is not None else gzip.compress(primary, compresslevel=1)
    digest = hashlib.sha256(compressed).hexdigest()
    name = f"{digest}-primary.xml.gz"
    (repo / "repodata").mkdir(parents=True, exist_ok=True)
    (repo / "repodata" / name).write_bytes(compressed)
    size = declared_size if declared_size is not None else len(compressed)
    repomd = REPOMD.format(checksum=checksum or digest, location=location or f"repodata/{name}", size=size)
    (repo / "repodata" / "repomd.xml").write_text(repomd)
