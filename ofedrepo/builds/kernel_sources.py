"""Kernel sources for a build: a local tree, or ``kernel-devel-<K>`` fetched from a yum repository.

Looked for in order: ``<kernel_sources_root>/<K>`` (where ``kernel-devel`` installs them), the sources kept from
an earlier download (``ofedrepo.kept_sources``), then each configured repository's metadata
(``repodata/repomd.xml`` → primary, read by ``ofedrepo.builds.mirrors``). A package found is downloaded, its checksum
checked against the metadata, and only its ``/usr/src/kernels/<K>/`` tree is unpacked, by the one safe
extractor (``ofedrepo.bundles.archive.extract_payload``: streamed, bounded, links judged by where they resolve),
and kept. Kernel feeds download what they find as soon as they find it (``keep``): a mirror that drops an old
``kernel-devel`` when a newer one appears cannot leave a later build without its sources.
"""

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from ofedrepo import kept_sources
from ofedrepo.builds import mirrors
from ofedrepo.bundles.archive import Limits, extract_payload
from ofedrepo.config import MirrorSource, Settings
from ofedrepo.errors import BuildFailed, InvalidInput
from ofedrepo.kernel import devel_package_names, parse_kernel_release
from ofedrepo.rpmsignature import verify_signature
from ofedrepo.storage import PARTIAL_PREFIX, DataDir, exclusive_lock, remove_tree, scratch_prefix, tree_usage

log = logging.getLogger(__name__)


class KernelSources:
    def __init__(self, settings: Settings, data: DataDir, note: Callable[[str], None]) -> None:
        self.settings = settings
        self.data = data
        self.note = note
        self.limits = Limits.of(settings)

    @contextmanager
    def held(self, kernel: str) -> Iterator[Path]:
        """The directory to pass as ``-s``, kept from removal while the block runs; ``BuildFailed`` saying where
        it looked when there is none."""
        local = self.settings.kernel_sources_root / kernel
        if (local / "Makefile").is_file():
            self.note(f"kernel sources: {local}")
            yield local
            return
        for _ in range(2):  # a retention run may remove them between their download and their use: once
            with kept_sources.in_use(self.data, kernel) as kept:
                if kept is not None:
                    self.note(f"kernel sources: {kept} (downloaded earlier)")
                    yield kept
                    return
            self.keep(kernel)
        raise BuildFailed(f"kernel sources for {kernel} were removed as they were downloaded; try again")

    def keep(self, kernel: str) -> Path:
        """Download and keep ``kernel``'s ``kernel-devel`` sources, unless they are kept already."""
        local = self.settings.kernel_sources_root / kernel
        names = devel_package_names(parse_kernel_release(kernel))
        wanted = " or ".join(f"{name}-{kernel}" for name in names)
        if not self.settings.kernel_package_repos:
            raise BuildFailed(
                f"no kernel sources for {kernel}: {local} does not exist and no repository is configured to fetch "
                f"{wanted} from (OFEDREPO_KERNEL_DEVEL_REPOS, OFEDREPO_KERNEL_FEEDS)"
            )
        refusals = []
        with exclusive_lock(kept_sources.lock_file(self.data, kernel)):
            if kept_sources.is_complete(self.data, kernel):
                return kept_sources.tree(self.data, kernel)
            for source in self.settings.kernel_package_repos:
                try:
                    found = self._fetch_from(source, kernel, names)
                except (OSError, ValueError, mirrors.MirrorRefused, InvalidInput) as error:
                    detail = getattr(error, "detail", "")
                    log.info("kernel sources for %s from %s refused: %s %s", kernel, source.url, error, detail)
                    self.note(f"kernel sources: {source.url}: {error}")
                    refusals.append(f"{source.url}: {error}")
                    continue
                if found:
                    return found
        urls = ", ".join(source.url for source in self.settings.kernel_package_repos)
        raise BuildFailed(
            f"no kernel sources for {kernel}: {local} does not exist and {wanted} is in none of {urls}"
            + (f" (refused: {'; '.join(refusals)})" if refusals else "")
        )

    def _fetch_from(self, source: MirrorSource, kernel: str, names: list[str]) -> Path | None:
        base = mirrors.base_url(source.url)
        reach = mirrors.Reach(mirrors.Deadline(self.settings.build_timeout), self.settings.redirect_hosts)
        self.data.work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=scratch_prefix("kernel-devel"), dir=self.data.work) as scratch_text:
            scratch = Path(scratch_text)
            repomd = mirrors.read_repomd(base, scratch, reach=reach)
            assert repomd is not None  # only a conditional GET is answered 304
            packages = mirrors.read_packages(base, repomd.primary, scratch, mirrors.MAX_DOWNLOAD, names, reach)
            matches = [package for package in packages if mirrors.kernel_release(package) == kernel]
            if not matches:
                self.note(f"kernel sources: {' or '.join(names)} for {kernel} is not in {source.url}")
                return None
            package = min(matches, key=lambda match: names.index(match.name))
            rpm_path = scratch / "kernel-devel.rpm"
            url = base + mirrors.safe_href(package.location_href)
            self.note(f"kernel sources: downloading {url}")
            mirrors.download(url, rpm_path, (package.checksum_type, package.pkgId), reach=reach)
            self._check_signature(rpm_path, source)
            return self._unpack(rpm_path, kernel, PurePosixPath(package.location_href).name, url)

    def _check_signature(self, package: Path, source: MirrorSource) -> None:
        """The distro's signature, as dnf checks it with the repository's ``gpgkey``; unless the operator said
        ``gpgcheck=0`` for this repository."""
        if not source.gpgcheck:
            self.note(f"kernel sources: signature not checked ({source.url} is configured with gpgcheck=0)")
            return
        signer = verify_signature(package, list(source.gpgkeys), self.data.work)
        self.note(f"kernel sources: signature of key {signer} verified")

    def _unpack(self, package: Path, kernel: str, name: str, url: str) -> Path:
        """Unpack the package's ``/usr/src/kernels/<K>/`` into the kept sources, atomically, through the one safe
        extractor (its links into the installed system, ``build`` and the like, are dropped)."""
        partial = self.data.new_scratch(self.data.kernel_sources, PARTIAL_PREFIX.rstrip("-"))
        prefix = f"/usr/src/kernels/{kernel}"

        def select(name: str) -> str | None:
            return name.lstrip("/") if name == prefix or name.startswith(prefix + "/") else None

        try:
            try:
                count = extract_payload(package, partial, self.limits, select, links="inside")
            except InvalidInput as error:
                raise BuildFailed(f"kernel sources: {error}") from None
            if count == 0:
                raise BuildFailed(f"{package.name} holds nothing under {prefix}")
            kept_sources.record(partial, kernel, name, url, tree_usage(partial).bytes)
        except BaseException:
            remove_tree(partial)  # a full disk or a bad member leaves no half tree
            raise
        final = self.data.kernel_sources / kernel
        os.rename(partial, final)
        self.note(f"kernel sources: unpacked {count} files of {prefix} into {final}")
        return kept_sources.tree(self.data, kernel)
