"""Kernel sources for a build: a local tree, or ``kernel-devel-<K>`` fetched from a yum repository.

Looked for in order: ``<kernel_sources_root>/<K>`` (where ``kernel-devel`` installs them), the cache of
earlier downloads (``<data_dir>/kernel-sources/<K>``), then each configured repository's metadata
(``repodata/repomd.xml`` → primary, parsed with createrepo_c). A package found is downloaded, its checksum
checked against the metadata, and only its ``/usr/src/kernels/<K>/`` tree is unpacked (with librpm, entry
by entry, refusing names that climb out and links that point out).
"""

import hashlib
import logging
import os
import shutil
import stat
import tempfile
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import createrepo_c as cr

from ofedrepo.config import Settings
from ofedrepo.errors import BuildFailed
from ofedrepo.kernel import parse_kernel_release
from ofedrepo.rpmfile import open_payload
from ofedrepo.storage import PARTIAL_PREFIX, DataDir, exclusive_lock

log = logging.getLogger(__name__)

MAX_DOWNLOAD = 2 * 1024**3
_CHUNK = 1024 * 1024


def devel_package_names(kernel: str) -> list[str]:
    """The ``*-devel`` packages that carry a kernel's sources (UEK and RT kernels have their own)."""
    release = parse_kernel_release(kernel).release
    names = ["kernel-devel"]
    if "uek" in release:
        names.insert(0, "kernel-uek-devel")
    if ".rt" in release:
        names.insert(0, "kernel-rt-devel")
    return names


def safe_href(href: str) -> str:
    """A repository-relative location from metadata; anything absolute or climbing out is refused."""
    path = PurePosixPath(href)
    if not href or path.is_absolute() or ".." in path.parts or "://" in href or "\\" in href:
        raise BuildFailed(f"refusing the repository location {href[:200]!r}")
    return path.as_posix()


class KernelSources:
    def __init__(self, settings: Settings, data: DataDir, note: Callable[[str], None]) -> None:
        self.settings = settings
        self.data = data
        self.note = note

    def find(self, kernel: str) -> Path:
        """The directory to pass as ``-s``; ``BuildFailed`` saying where it looked when there is none."""
        local = self.settings.kernel_sources_root / kernel
        if (local / "Makefile").is_file():
            self.note(f"kernel sources: {local}")
            return local
        cached = self.data.kernel_sources / kernel / "usr" / "src" / "kernels" / kernel
        if (cached / "Makefile").is_file():
            self.note(f"kernel sources: {cached} (downloaded earlier)")
            return cached
        names = devel_package_names(kernel)
        wanted = " or ".join(f"{name}-{kernel}" for name in names)
        if not self.settings.kernel_package_repos:
            raise BuildFailed(
                f"no kernel sources for {kernel}: {local} does not exist and no repository is configured to fetch "
                f"{wanted} from (OFEDREPO_KERNEL_DEVEL_REPOS, OFEDREPO_KERNEL_FEEDS)"
            )
        with exclusive_lock(self.data.locks / "kernel-sources" / f"{kernel}.lock"):
            if (cached / "Makefile").is_file():
                return cached
            for baseurl in self.settings.kernel_package_repos:
                try:
                    found = self._fetch_from(baseurl, kernel, names)
                except (OSError, ValueError, cr.CreaterepoCError) as error:
                    self.note(f"kernel sources: {baseurl}: {error}")
                    continue
                if found:
                    return found
        raise BuildFailed(
            f"no kernel sources for {kernel}: {local} does not exist and {wanted} is in none of "
            f"{', '.join(self.settings.kernel_package_repos)}"
        )

    def _fetch_from(self, baseurl: str, kernel: str, names: list[str]) -> Path | None:
        base = baseurl.rstrip("/") + "/"
        if urllib.parse.urlsplit(base).scheme not in ("http", "https", "file"):
            raise ValueError("only http, https and file repository URLs are supported")
        self.data.work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="kernel-devel-", dir=self.data.work) as scratch_text:
            scratch = Path(scratch_text)
            repomd_path = scratch / "repomd.xml"
            download(base + "repodata/repomd.xml", repomd_path, None)
            repomd = cr.Repomd(str(repomd_path))
            primary = next((record for record in repomd.records if record.type == "primary"), None)
            if primary is None:
                raise ValueError("repomd.xml lists no primary metadata")
            primary_path = scratch / "primary.xml.gz"
            download(base + safe_href(primary.location_href), primary_path, (primary.checksum_type, primary.checksum))
            matches: list[cr.Package] = []

            def keep(package: cr.Package) -> bool:
                release = f"{package.version}-{package.release}.{package.arch}"
                if package.name in names and release == kernel:
                    matches.append(package)
                return True

            cr.xml_parse_primary(str(primary_path), pkgcb=keep, do_files=False)
            if not matches:
                self.note(f"kernel sources: {' or '.join(names)} for {kernel} is not in {baseurl}")
                return None
            package = min(matches, key=lambda match: names.index(match.name))
            rpm_path = scratch / "kernel-devel.rpm"
            url = base + safe_href(package.location_href)
            self.note(f"kernel sources: downloading {url}")
            download(url, rpm_path, (package.checksum_type, package.pkgId))
            return self._unpack(rpm_path, kernel)

    def _unpack(self, package: Path, kernel: str) -> Path:
        """Unpack the package's ``/usr/src/kernels/<K>/`` into the cache, atomically."""
        partial = self.data.kernel_sources / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}"
        prefix = f"/usr/src/kernels/{kernel}"
        count = 0
        try:
            with open_payload(package) as (_, archive):
                for entry in archive:
                    name = entry.name
                    if name != prefix and not name.startswith(prefix + "/"):
                        continue
                    relative = PurePosixPath(name.lstrip("/"))
                    if ".." in relative.parts:
                        raise BuildFailed(f"{package.name}: refusing the member {name[:200]!r}")
                    target = partial / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if stat.S_ISDIR(entry.mode):
                        target.mkdir(exist_ok=True)
                    elif stat.S_ISLNK(entry.mode):
                        pointed = os.path.normpath(PurePosixPath(name).parent / entry.linkto)
                        # Links out of the tree (build -> /lib/modules/...) are not needed to build against it.
                        if not entry.linkto.startswith("/") and (pointed + "/").startswith(prefix + "/"):
                            target.symlink_to(entry.linkto)
                    elif stat.S_ISREG(entry.mode):
                        with target.open("xb") as writer:
                            writer.write(archive.read())
                        target.chmod(0o755 if entry.mode & 0o111 else 0o644)
                        count += 1
            if count == 0:
                raise BuildFailed(f"{package.name} holds nothing under {prefix}")
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)  # a full disk or a bad member leaves no half tree
            raise
        final = self.data.kernel_sources / kernel
        os.rename(partial, final)
        self.note(f"kernel sources: unpacked {count} files of {prefix} into {final}")
        return final / prefix.lstrip("/")


def download(url: str, destination: Path, checksum: tuple[str, str] | None, max_bytes: int = MAX_DOWNLOAD) -> None:
    """Fetch ``url`` into ``destination``, never past ``max_bytes``; with ``checksum`` (type, hex), refuse a
    mismatch."""
    digest = hashlib.new(checksum[0]) if checksum else None
    size = 0
    with urllib.request.urlopen(url, timeout=60) as response, destination.open("wb") as writer:
        while chunk := response.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise ValueError(f"{url} is larger than {max_bytes} bytes")
            writer.write(chunk)
            if digest:
                digest.update(chunk)
    if checksum and digest and digest.hexdigest() != checksum[1]:
        raise ValueError(f"{url}: {checksum[0]} {digest.hexdigest()} does not match the repository's {checksum[1]}")
