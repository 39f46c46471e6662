"""Kernel sources for a build: a local tree, or ``kernel-devel-<K>`` fetched from a yum repository.

Looked for in order: ``<kernel_sources_root>/<K>`` (where ``kernel-devel`` installs them), the cache of
earlier downloads (``<data_dir>/kernel-sources/<K>``), then each configured repository's metadata
(``repodata/repomd.xml`` → primary, read by ``ofedrepo.builds.mirrors``). A package found is downloaded, its checksum
checked against the metadata, and only its ``/usr/src/kernels/<K>/`` tree is unpacked (with librpm, entry
by entry, refusing names that climb out and links that point out).
"""

import logging
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ofedrepo.builds import mirrors
from ofedrepo.config import Settings
from ofedrepo.errors import BuildFailed
from ofedrepo.kernel import parse_kernel_release
from ofedrepo.rpmfile import open_payload
from ofedrepo.storage import PARTIAL_PREFIX, DataDir, exclusive_lock

log = logging.getLogger(__name__)


def devel_package_names(kernel: str) -> list[str]:
    """The ``*-devel`` packages that carry a kernel's sources (UEK and RT kernels have their own)."""
    release = parse_kernel_release(kernel).release
    names = ["kernel-devel"]
    if "uek" in release:
        names.insert(0, "kernel-uek-devel")
    if ".rt" in release:
        names.insert(0, "kernel-rt-devel")
    return names


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
                except (OSError, ValueError, mirrors.MirrorRefused) as error:
                    self.note(f"kernel sources: {baseurl}: {error}")
                    continue
                if found:
                    return found
        raise BuildFailed(
            f"no kernel sources for {kernel}: {local} does not exist and {wanted} is in none of "
            f"{', '.join(self.settings.kernel_package_repos)}"
        )

    def _fetch_from(self, baseurl: str, kernel: str, names: list[str]) -> Path | None:
        base = mirrors.base_url(baseurl)
        self.data.work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="kernel-devel-", dir=self.data.work) as scratch_text:
            scratch = Path(scratch_text)
            repomd = mirrors.read_repomd(base, scratch)
            assert repomd is not None  # only a conditional GET is answered 304
            packages = mirrors.read_packages(base, repomd.primary, scratch, mirrors.MAX_DOWNLOAD, names)
            matches = [
                package for package in packages if f"{package.version}-{package.release}.{package.arch}" == kernel
            ]
            if not matches:
                self.note(f"kernel sources: {' or '.join(names)} for {kernel} is not in {baseurl}")
                return None
            package = min(matches, key=lambda match: names.index(match.name))
            rpm_path = scratch / "kernel-devel.rpm"
            url = base + mirrors.safe_href(package.location_href)
            self.note(f"kernel sources: downloading {url}")
            mirrors.download(url, rpm_path, (package.checksum_type, package.pkgId))
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
