"""Publishing a bundle rebuilt for one kernel as a new, immutable version of its yum repository.

    open the bundle ─> infer/check the kernel ─> digest the packages ─> same as latest? answer with it
        ─> stage: packages, signatures, keys, repodata (in <data>/staging, never served)
        ─> under the repo's lock: number N, .repo file, record, rename(staging, N), switch `latest`

A version directory appears by one ``rename(2)`` of a complete staging directory, and ``latest`` moves
by one ``rename(2)`` of a symlink, so a reader (or a crash) never sees a partial version. Numbers come
from the highest of what the database and the tree know, under an exclusive lock per repo, and the
database's unique (repo, number) constraint backs that up across hosts.
"""

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo import catalog, repodata, signing
from ofedrepo.archive import Limits
from ofedrepo.config import Settings
from ofedrepo.db import transaction
from ofedrepo.errors import InvalidInput
from ofedrepo.kernel import parse_kernel_release
from ofedrepo.metrics import PUBLISH_SECONDS
from ofedrepo.models import RepoVersion
from ofedrepo.repofile import MELLANOX_KEY, REPO_FILE_NAME, SITE_KEY, RepoLocation, render_repo_file
from ofedrepo.rpmfile import PackageHeader, read_header
from ofedrepo.storage import (
    LATEST,
    DataDir,
    exclusive_lock,
    fsync_directory,
    latest_number,
    switch_symlink,
    version_numbers,
)
from ofedrepo.unpack import OpenedBundle, open_bundle

log = logging.getLogger(__name__)

_NUMBERING_ATTEMPTS = 5
#: Scratch space untouched this long belongs to a publish that died (no publish runs for a day).
STALE_SCRATCH_SECONDS = 24 * 3600


class Progress(Protocol):
    """How a publish reports what it is doing (the CLI draws Rich progress bars from it)."""

    def step(self, description: str, total: int | None = None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...


class _Silent:
    def step(self, description: str, total: int | None = None) -> None:
        log.info("%s", description)

    def advance(self, amount: int = 1) -> None:
        pass


@dataclass(frozen=True)
class PublishResult:
    repo_id: int
    bundle_name: str
    kernel: str
    version: int
    created: bool
    """False when the packages were identical to the latest version's, which is answered instead."""
    path: Path
    package_count: int
    signed: list[str] = field(default_factory=list)
    """Packages ofedrepo signed with the site key (those that were unsigned or signed by an unknown key)."""


class _NumberTaken(Exception):
    """The version number was taken between choosing it and claiming it (only across hosts)."""


def infer_kernel(headers: dict[str, PackageHeader], requested: str | None) -> str:
    """The kernel the bundle was built for: from its kernel-module packages, checked against ``requested``."""
    found: dict[str, list[str]] = {}
    for relative, header in headers.items():
        for kernel in header.module_kernels:
            found.setdefault(kernel, []).append(relative)
    if requested is not None:
        kernel = parse_kernel_release(requested).text
        others = sorted(set(found) - {kernel})
        if others:
            raise InvalidInput(
                f"the bundle's kernel modules are built for {', '.join(others)}, not {kernel} "
                f"(e.g. {found[others[0]][0]})"
            )
        return kernel
    if not found:
        raise InvalidInput("no package in RPMS/ installs kernel modules; pass the kernel explicitly (--kernel)")
    if len(found) > 1:
        raise InvalidInput(
            f"the bundle holds kernel modules for several kernels ({', '.join(sorted(found))}); "
            "pass the one to publish (--kernel)"
        )
    return parse_kernel_release(next(iter(found))).text


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def source_digest(bundle_name: str, kernel: str, packages: dict[str, str]) -> str:
    """Identity of a publication's input: bundle, kernel and each package's path and sha256."""
    digest = hashlib.sha256(f"{bundle_name}\n{kernel}\n".encode())
    for relative in sorted(packages):
        digest.update(f"{relative} {packages[relative]}\n".encode())
    return digest.hexdigest()


class Publisher:
    """Publishes bundles into the data dir's tree and records versions in the database."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.data = DataDir(settings.data_dir).ensure()
        for leftover in self.data.remove_stale_scratch(STALE_SCRATCH_SECONDS):
            log.info("removed %s, left by a publish that did not finish", leftover)
        self.limits = Limits.of(settings)

    def publish(
        self,
        source: Path,
        kernel: str | None = None,
        build_id: int | None = None,
        progress: Progress | None = None,
    ) -> PublishResult:
        """Publish ``source`` (an ``-ext`` tgz, an ISO or a directory) for ``kernel`` (inferred if None)."""
        if kernel is not None:
            parse_kernel_release(kernel)  # refuse a hostile kernel before touching anything
        progress = progress or _Silent()
        progress.step(f"Opening {source.name}")
        with open_bundle(source, self.data, self.limits) as bundle:
            return self.publish_opened(bundle, kernel, build_id, progress)

    @PUBLISH_SECONDS.time()
    def publish_opened(
        self, bundle: OpenedBundle, requested_kernel: str | None, build_id: int | None, progress: Progress
    ) -> PublishResult:
        identity = bundle.identity
        progress.step(f"Reading {len(bundle.packages)} packages", total=len(bundle.packages))
        headers, digests = self._read_packages(bundle, progress.advance)
        kernel = infer_kernel(headers, requested_kernel)
        digest = source_digest(identity.name, kernel, digests)
        repo_dir = self.data.repo_dir(identity.name, kernel)

        with transaction(self.sessions) as session:
            repo = catalog.get_or_create_repo(session, identity, kernel)
            repo_id = repo.id
            existing = catalog.latest_version(session, repo_id)
            if existing is not None and existing.source_digest == digest:
                return self._unchanged(repo_id, identity.name, kernel, existing, repo_dir)

        staging = self.data.new_scratch(self.data.staging, "publish")
        try:
            signed, signing_key, gpgcheck = self._stage(bundle, headers, staging, progress)
            return self._commit(
                repo_id, identity.name, kernel, digest, staging, signed, signing_key, gpgcheck, build_id, progress
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _read_packages(
        self, bundle: OpenedBundle, advance: Callable[[], None]
    ) -> tuple[dict[str, PackageHeader], dict[str, str]]:
        def read(relative: str) -> tuple[str, PackageHeader, str]:
            path = bundle.rpms / relative
            return relative, read_header(path), _sha256(path)

        headers, digests = {}, {}
        with ThreadPoolExecutor(max_workers=repodata.IO_THREADS) as pool:
            for relative, header, digest in pool.map(read, bundle.packages):
                headers[relative], digests[relative] = header, digest
                advance()
        return headers, digests

    def _unchanged(
        self, repo_id: int, bundle_name: str, kernel: str, version: RepoVersion, repo_dir: Path
    ) -> PublishResult:
        # A crash after recording a version but before switching `latest` is repaired here.
        with exclusive_lock(self.data.repo_lock(bundle_name, kernel)):
            if (repo_dir / str(version.number)).is_dir() and latest_number(repo_dir) != version.number:
                switch_symlink(repo_dir / LATEST, str(version.number))
        return PublishResult(
            repo_id=repo_id,
            bundle_name=bundle_name,
            kernel=kernel,
            version=version.number,
            created=False,
            path=repo_dir / str(version.number),
            package_count=version.package_count,
        )

    def _stage(
        self, bundle: OpenedBundle, headers: dict[str, PackageHeader], staging: Path, progress: Progress
    ) -> tuple[list[str], str | None, bool]:
        """Fill ``staging`` with RPMS/ and the keys; return (signed packages, site key, gpgcheck)."""
        rpms = staging / "RPMS"
        rpms.mkdir(parents=True)
        progress.step("Staging packages", total=len(bundle.packages))
        for relative in bundle.packages:
            destination = rpms / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            if bundle.owned:
                os.rename(bundle.rpms / relative, destination)  # our scratch copy, same filesystem
            else:
                shutil.copyfile(bundle.rpms / relative, destination)
            progress.advance()

        vendor_ids = signing.key_ids(bundle.vendor_key, self.data.home) if bundle.vendor_key else set()
        needs_signature = sorted(relative for relative, header in headers.items() if header.signer not in vendor_ids)
        keys = [bundle.vendor_key.strip() + "\n"] if bundle.vendor_key else []
        signing_key = None
        if self.settings.signing_enabled:
            key = signing.site_key(self.data, self.settings.signing_key_file, self.settings.signing_key_uid)
            if needs_signature:
                progress.step(f"Signing {len(needs_signature)} packages with the site key")
                signing.sign_packages([rpms / relative for relative in needs_signature], key)
            site_public = signing.export_public_key(key)
            (staging / SITE_KEY).write_text(site_public)
            keys.append(site_public)
            signing_key = key.fingerprint
            signed = needs_signature
        else:
            signed = []
            if needs_signature:
                log.warning(
                    "signing is off and %d packages are unsigned or signed by a key the bundle does not "
                    "ship; the repo is published with gpgcheck=0",
                    len(needs_signature),
                )
        (staging / MELLANOX_KEY).write_text("".join(keys))
        gpgcheck = self.settings.signing_enabled or not needs_signature

        progress.step("Generating repodata", total=len(bundle.packages))
        repodata.write_repodata(rpms, bundle.packages, on_package=progress.advance)
        if self.settings.signing_enabled:
            progress.step("Signing repomd.xml")
            signing.sign_detached(rpms / "repodata" / "repomd.xml", key)
        return signed, signing_key, gpgcheck

    def _commit(
        self,
        repo_id: int,
        bundle_name: str,
        kernel: str,
        digest: str,
        staging: Path,
        signed: list[str],
        signing_key: str | None,
        gpgcheck: bool,
        build_id: int | None,
        progress: Progress,
    ) -> PublishResult:
        repo_dir = self.data.repo_dir(bundle_name, kernel)
        repo_dir.mkdir(parents=True, exist_ok=True)
        package_count = sum(1 for _ in (staging / "RPMS").rglob("*.rpm"))
        size = sum(path.stat().st_size for path in staging.rglob("*") if path.is_file())
        progress.step("Publishing")
        with exclusive_lock(self.data.repo_lock(bundle_name, kernel)):
            for _ in range(_NUMBERING_ATTEMPTS):
                try:
                    with transaction(self.sessions) as session:
                        existing = catalog.latest_version(session, repo_id)
                        if existing is not None and existing.source_digest == digest:
                            # Published by someone else while we staged: answer with theirs.
                            return self._unchanged(repo_id, bundle_name, kernel, existing, repo_dir)
                        numbers = [catalog.highest_number(session, repo_id), *version_numbers(repo_dir)]
                        number = max(numbers) + 1
                        location = RepoLocation(self.settings.base_url, bundle_name, kernel, str(number))
                        repo_gpgcheck = signing_key is not None
                        (staging / REPO_FILE_NAME).write_text(
                            render_repo_file(location, gpgcheck=gpgcheck, repo_gpgcheck=repo_gpgcheck)
                        )
                        session.add(
                            RepoVersion(
                                repo_id=repo_id,
                                number=number,
                                source_digest=digest,
                                package_count=package_count,
                                size_bytes=size,
                                signing_key=signing_key,
                                gpgcheck=gpgcheck,
                                repo_gpgcheck=repo_gpgcheck,
                                build_id=build_id,
                            )
                        )
                        self._flush_and_rename(session, staging, repo_dir / str(number))
                except _NumberTaken:
                    continue  # another host took this number; the row was rolled back, try the next
                # Committed: the version exists for the database and on disk; now make it the latest.
                switch_symlink(repo_dir / LATEST, str(number))
                log.info("published %s for %s as version %d", bundle_name, kernel, number)
                return PublishResult(
                    repo_id=repo_id,
                    bundle_name=bundle_name,
                    kernel=kernel,
                    version=number,
                    created=True,
                    path=repo_dir / str(number),
                    package_count=package_count,
                    signed=signed,
                )
        raise InvalidInput(f"could not allocate a version number for {bundle_name}/{kernel}; retry")

    @staticmethod
    def _flush_and_rename(session: Session, staging: Path, target: Path) -> None:
        """Claim the number in the database, then on disk; either failing means someone else has it."""
        try:
            session.flush()
        except IntegrityError:
            raise _NumberTaken from None
        try:
            os.rename(staging, target)
        except OSError:  # ENOTEMPTY/EEXIST: a non-empty directory of that number exists
            raise _NumberTaken from None
        fsync_directory(target.parent)
