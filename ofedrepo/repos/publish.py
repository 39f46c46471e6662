"""Publishing a bundle rebuilt for one kernel as a new, immutable version of its yum repository.

    open the bundle ─> infer/check the kernel ─> choose the package set for it (packageset) ─> verify the
        modules ─> digest the set ─> same as latest? answer with it
        ─> stage: packages, regenerated metadata packages, signatures, keys, repodata (in <data>/staging)
        ─> under the repo's lock: number N, .repo file, record, rename(staging, N), switch `latest`

A version directory appears by one ``rename(2)`` of a complete staging directory, and ``latest`` moves
by one ``rename(2)`` of a symlink, so a reader (or a crash) never sees a partial version. The rename happens
inside the transaction that records the version; a process killed between the two leaves a directory the
database does not know, with its row written beside it (``.version.json``, never served): the next publish
or build of that repo records it (``recover``), so a retry answers with it instead of making another. Numbers come
from the highest of what the database and the tree know, under an exclusive lock per repo, and the
database's unique (repo, number) constraint backs that up across hosts.

Lock order: the repo's file lock first, then the database. A transaction is never open while waiting for
the file lock (SQLite's write lock held across that wait is how concurrent publishers deadlocked), and the
file lock is taken once per publish: flock locks belong to an open file, so a second descriptor would wait
for the first.
"""

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.bundles.archive import Limits
from ofedrepo.bundles.store import BundleStore
from ofedrepo.bundles.unpack import OpenedBundle
from ofedrepo.bundles.vendors import vendor_for_output
from ofedrepo.config import Settings
from ofedrepo.db import transaction
from ofedrepo.errors import InvalidInput
from ofedrepo.kernel import parse_kernel_release
from ofedrepo.metrics import PUBLISH_SECONDS
from ofedrepo.models import RepoVersion
from ofedrepo.repos import metadata, metapackages, packageset, queries, signing
from ofedrepo.repos.repofile import MELLANOX_KEY, REPO_FILE_NAME, SITE_KEY, RepoLocation, render_repo_file
from ofedrepo.repos.verify import verify_kernel_packages
from ofedrepo.rpmfile import PackageHeader, read_header
from ofedrepo.storage import (
    LATEST,
    DataDir,
    exclusive_lock,
    fsync_directory,
    fsync_tree,
    latest_number,
    remove_switch_leftovers,
    switch_symlink,
    version_numbers,
)
from ofedrepo.uploads import sha256_file

log = logging.getLogger(__name__)

_NUMBERING_ATTEMPTS = 5
#: Changes whenever how a package set is chosen or regenerated changes: the same input then makes a new version.
SELECTION_REVISION = "1"
#: Scratch space untouched this long belongs to a publish that died (no publish runs for a day).
#: Each version's database row, in its directory (hidden: the tree server serves no dot names).
RECORD_FILE = ".version.json"
_RECORDED_FIELDS = (
    "number", "source_digest", "package_count", "size_bytes", "signing_key", "gpgcheck", "repo_gpgcheck",
    "package_names", "build_id",
)  # fmt: skip


#: Called with the session that is about to record a new version; raises to refuse it (see ``publish_opened``).
Fence = Callable[[Session], None]


class Progress(Protocol):
    """How a publish reports what it is doing (the CLI draws Rich progress bars from it)."""

    def step(self, description: str, total: int | None = None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...

    def note(self, text: str) -> None:
        """A decision worth a line of its own (a package left out, a package regenerated)."""


class _Silent:
    def step(self, description: str, total: int | None = None) -> None:
        log.info("%s", description)

    def advance(self, amount: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        log.info("%s", text)


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
    left_out: list[str] = field(default_factory=list)
    """Packages of the bundle this version does not hold, each with the reason."""
    regenerated: list[str] = field(default_factory=list)
    """Metadata packages made again for the kernel (their requirements named another kernel's packages)."""


@dataclass(frozen=True)
class _Staged:
    """A complete version waiting in staging to be numbered and renamed into place."""

    path: Path
    digest: str
    signed: list[str]
    signing_key: str | None
    gpgcheck: bool
    package_names: list[str]
    build_id: int | None


class _NumberTaken(Exception):
    """The version number was taken between choosing it and claiming it (only across hosts)."""


def source_digest(bundle_name: str, kernel: str, packages: dict[str, str], rewrites: Sequence[str] = ()) -> str:
    """Identity of a publication's input: bundle, kernel, each package's name and sha256, the regenerations."""
    digest = hashlib.sha256(f"{bundle_name}\n{kernel}\n{SELECTION_REVISION}\n".encode())
    for name in sorted(packages):
        digest.update(f"{name} {packages[name]}\n".encode())
    for rewrite in rewrites:
        digest.update(f"regenerate {rewrite}\n".encode())
    return digest.hexdigest()


class Publisher:
    """Publishes bundles into the data dir's tree and records versions in the database."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.data = DataDir(settings.data_dir).ensure()
        for leftover in self.data.remove_stale_scratch(settings.scratch_lifetime):
            log.info("removed %s, left by a publish that did not finish", leftover)
        self.limits = Limits.of(settings)

    def publish(
        self,
        source: Path,
        kernel: str | None = None,
        build_id: int | None = None,
        progress: Progress | None = None,
    ) -> PublishResult:
        """Publish what a vendor's rebuild tool made elsewhere for ``kernel`` (inferred if None): an ``-ext`` tgz,
        ISO or directory, or DOCA's ``doca-kernel-repo-*.rpm`` or ``Modules/<K>/`` directory, which is published
        with the registered DOCA repository's userspace packages."""
        if kernel is not None:
            parse_kernel_release(kernel)  # refuse a hostile kernel before touching anything
        progress = progress or _Silent()
        progress.step(f"Opening {source.name}")
        store = BundleStore(self.settings, self.sessions)
        vendor = vendor_for_output(source)
        with vendor.open_output(source, kernel, store.registered, store.workspace, progress.note) as output:
            return self.publish_opened(output.bundle, output.kernel, build_id, progress)

    @PUBLISH_SECONDS.time()
    def publish_opened(
        self,
        bundle: OpenedBundle,
        requested_kernel: str | None,
        build_id: int | None,
        progress: Progress,
        module_certificate: Path | None = None,
        fence: Fence | None = None,
    ) -> PublishResult:
        """Publish the package set ``bundle`` offers for the kernel; ``module_certificate`` requires every module
        to be signed by its key.

        ``fence`` runs in the transaction that records the new version, and raises to stop it: a build's
        worker checks there that the build is still its own.
        """
        identity = bundle.identity
        progress.step(f"Reading {len(bundle.packages)} packages", total=len(bundle.packages))
        headers, digests = self._read_packages(bundle, progress.advance)
        kernel = packageset.infer_kernel(headers, requested_kernel)
        if bundle.library_set:
            progress.note(f"library set: RPMS/{bundle.library_set} (OFEDREPO_BUNDLE_LIBRARIES)")
        selection = packageset.choose(headers, kernel, bundle.rebuilt)
        left_out = [f"{Path(left.key).name}: {left.reason}" for left in selection.left_out]
        for line in left_out:
            progress.note(f"left out {line}")
        for rewrite in selection.rewrites:
            progress.note(f"regenerating {rewrite.original.name} for {kernel}: {'; '.join(rewrite.notes)}")
        progress.step("Verifying kernel modules")
        verified = verify_kernel_packages([bundle.root / key for key in selection.kept], kernel, module_certificate)
        signed = f", all signed by the key of {module_certificate.name}" if module_certificate else ""
        progress.note(
            f"verified: {verified.modules} kernel modules in {verified.packages} packages are under "
            f"/lib/modules/{kernel}/ with vermagic {kernel}{signed}"
        )
        kept = {Path(key).name: digests[key] for key in selection.kept}
        plans = [f"{rewrite.original.nevra} {' '.join(map(str, rewrite.requires))}" for rewrite in selection.rewrites]
        digest = source_digest(identity.name, kernel, kept, plans)
        repo_dir = self.data.repo_dir(identity.name, kernel)

        with transaction(self.sessions) as session:
            repo = queries.get_or_create_repo(session, identity, kernel)
            repo_id = repo.id
            existing = queries.latest_version(session, repo_id)
        # Outside the transaction: the repo's lock is never taken while holding the database (see above).
        if existing is not None and existing.source_digest == digest:
            return self._unchanged(repo_id, identity.name, kernel, existing, repo_dir)

        staging = self.data.new_scratch(self.data.staging, "publish")
        try:
            staged = self._stage(bundle, headers, selection, staging, digest, build_id, progress)
            result = self._commit(repo_id, identity.name, kernel, staged, progress, fence)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return replace(result, left_out=left_out, regenerated=[rewrite.original.name for rewrite in selection.rewrites])

    def _read_packages(
        self, bundle: OpenedBundle, advance: Callable[[], None]
    ) -> tuple[dict[str, PackageHeader], dict[str, str]]:
        def read(relative: str) -> tuple[str, PackageHeader, str]:
            path = bundle.root / relative
            return relative, read_header(path), sha256_file(path)

        headers, digests = {}, {}
        with ThreadPoolExecutor(max_workers=metadata.IO_THREADS) as pool:
            for relative, header, digest in pool.map(read, bundle.packages):
                headers[relative], digests[relative] = header, digest
                advance()
        return headers, digests

    def _unchanged(
        self, repo_id: int, bundle_name: str, kernel: str, version: RepoVersion, repo_dir: Path, locked: bool = False
    ) -> PublishResult:
        """Answer with an existing version. ``locked``: the caller holds the repo's lock (flock locks belong
        to an open file, so taking it again on a new descriptor would wait for ever)."""
        # A crash after recording a version but before switching `latest` is repaired here.
        with nullcontext() if locked else exclusive_lock(self.data.repo_lock(bundle_name, kernel)):
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
        self,
        bundle: OpenedBundle,
        headers: dict[str, PackageHeader],
        selection: packageset.Selection,
        staging: Path,
        digest: str,
        build_id: int | None,
        progress: Progress,
    ) -> _Staged:
        """Fill ``staging`` with RPMS/ (flat: one directory, as DIB's baseurl wants) and the keys."""
        rpms = staging / "RPMS"
        rpms.mkdir(parents=True)
        progress.step("Staging packages", total=len(selection.kept))
        for kept in selection.kept:
            destination = rpms / Path(kept).name
            if bundle.owned:
                os.rename(bundle.root / kept, destination)  # our scratch copy, same filesystem
            else:
                shutil.copyfile(bundle.root / kept, destination)
            progress.advance()
        regenerated = []
        if selection.rewrites:
            progress.step(f"Regenerating {len(selection.rewrites)} metadata packages for {selection.kernel}")
            rewrites = list(selection.rewrites)
            built = metapackages.build(rewrites, selection.kernel, staging / ".metapackages", self.data.home)
            for package in built:
                os.rename(package, rpms / package.name)
                regenerated.append(package.name)
            shutil.rmtree(staging / ".metapackages")

        vendor_ids = signing.key_ids(bundle.vendor_key, self.data.home) if bundle.vendor_key else set()
        needs_signature = sorted(
            [Path(kept).name for kept in selection.kept if headers[kept].signer not in vendor_ids] + regenerated
        )
        keys = [bundle.vendor_key.strip() + "\n"] if bundle.vendor_key else []
        signing_key = None
        if self.settings.signing_enabled:
            key = signing.site_key(self.data, self.settings.signing_key_file, self.settings.signing_key_uid)
            if needs_signature:
                progress.step(f"Signing {len(needs_signature)} packages with the site key")
                signing.sign_packages([rpms / name for name in needs_signature], key)
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

        published = sorted(path.name for path in rpms.glob("*.rpm"))
        progress.step("Generating repodata", total=len(published))
        metadata.write_repodata(rpms, published, on_package=progress.advance)
        if self.settings.signing_enabled:
            progress.step("Signing repomd.xml")
            signing.sign_detached(rpms / "repodata" / "repomd.xml", key)
        names = {headers[kept].name for kept in selection.kept} | {r.original.name for r in selection.rewrites}
        fsync_tree(staging)
        return _Staged(staging, digest, signed, signing_key, gpgcheck, sorted(names), build_id)

    def _commit(
        self, repo_id: int, bundle_name: str, kernel: str, staged: _Staged, progress: Progress, fence: Fence | None
    ) -> PublishResult:
        repo_dir = self.data.repo_dir(bundle_name, kernel)
        repo_dir.mkdir(parents=True, exist_ok=True)
        package_count = sum(1 for _ in (staged.path / "RPMS").glob("*.rpm"))
        size = sum(path.stat().st_size for path in staged.path.rglob("*") if path.is_file())
        progress.step("Publishing")
        with exclusive_lock(self.data.repo_lock(bundle_name, kernel)):
            self._record_unrecorded(repo_id, repo_dir)
            for _ in range(_NUMBERING_ATTEMPTS):
                try:
                    with transaction(self.sessions) as session:
                        if fence:
                            fence(session)
                        existing = queries.latest_version(session, repo_id)
                        if existing is None or existing.source_digest != staged.digest:
                            # Another attempt of the same build (its first worker lost its lease) got here first.
                            existing = queries.version_of_build(session, staged.build_id) if staged.build_id else None
                        if existing is not None:
                            # Published by someone else while we staged: answer with theirs.
                            return self._unchanged(repo_id, bundle_name, kernel, existing, repo_dir, locked=True)
                        numbers = [queries.highest_number(session, repo_id), *version_numbers(repo_dir)]
                        number = max(numbers) + 1
                        location = RepoLocation(self.settings.base_url, bundle_name, kernel, str(number))
                        repo_gpgcheck = staged.signing_key is not None
                        (staged.path / REPO_FILE_NAME).write_text(
                            render_repo_file(location, gpgcheck=staged.gpgcheck, repo_gpgcheck=repo_gpgcheck)
                        )
                        version = RepoVersion(
                            repo_id=repo_id,
                            number=number,
                            source_digest=staged.digest,
                            package_count=package_count,
                            size_bytes=size,
                            signing_key=staged.signing_key,
                            gpgcheck=staged.gpgcheck,
                            repo_gpgcheck=repo_gpgcheck,
                            package_names=staged.package_names,
                            build_id=staged.build_id,
                        )
                        _write_record(staged.path, version)
                        session.add(version)
                        self._flush_and_rename(session, staged.path, repo_dir / str(number))
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
                    signed=staged.signed,
                )
        raise InvalidInput(f"could not allocate a version number for {bundle_name}/{kernel}; retry")

    def recover(self, repo_id: int, bundle_name: str, kernel: str) -> None:
        """Repair what a killed publish left: versions renamed into place but not recorded (see above), and a
        `latest` that was not switched to the newest version."""
        repo_dir = self.data.repo_dir(bundle_name, kernel)
        if repo_dir.is_dir():
            with exclusive_lock(self.data.repo_lock(bundle_name, kernel)):
                self._record_unrecorded(repo_id, repo_dir)

    def _record_unrecorded(self, repo_id: int, repo_dir: Path) -> None:
        """Under the repo's lock: insert the rows of version directories the database lacks; `latest` to the
        newest version."""
        with transaction(self.sessions) as session:
            known = queries.recorded_numbers(session, repo_id)
            recorded = []
            for number in version_numbers(repo_dir):
                if number in known:
                    continue
                fields = _read_record(repo_dir / str(number))
                if fields is None or fields.get("number") != number:
                    log.warning("%s/%d has no usable %s: left unrecorded", repo_dir, number, RECORD_FILE)
                    continue
                session.add(RepoVersion(repo_id=repo_id, **fields))
                recorded.append(number)
        for number in recorded:
            log.warning("recorded %s/%d, which a publish that was killed left unrecorded", repo_dir, number)
        # Killed after the commit but before `latest` moved: the newest version is complete, point at it.
        remove_switch_leftovers(repo_dir / LATEST)
        newest = max(known | set(recorded), default=0)
        if newest and (repo_dir / str(newest)).is_dir() and (latest_number(repo_dir) or 0) < newest:
            switch_symlink(repo_dir / LATEST, str(newest))
            log.warning("%s/latest now points at version %d, as the publish that made it was killed", repo_dir, newest)

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


def _write_record(staging: Path, version: RepoVersion) -> None:
    record = {name: getattr(version, name) for name in _RECORDED_FIELDS}
    with (staging / RECORD_FILE).open("w") as stream:
        json.dump(record, stream)
        stream.flush()
        os.fsync(stream.fileno())
    fsync_directory(staging)


def _read_record(version_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((version_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or set(record) != set(_RECORDED_FIELDS):
        return None
    return record
