"""DOCA-OFED: NVIDIA's DOCA-Host yum repository of one DOCA release, for one distro and arch, and
``doca-kernel-support``.

MLNX_OFED's successor ships no bundle directory with marker files and a script: it ships a yum repository,
in one of two forms, both accepted here:

- the local-repo package ``doca-host-<ver>-<build>_<ofed>_<distro>.<arch>.rpm``
  (``doca-host-2.10.0-093000_25.01_rhel95.x86_64.rpm``, NVIDIA's DOCA-Host install guide), whose payload is
  the repository at ``/usr/share/doca-host-<ver>/repo/`` (``Packages/``, ``repodata/``, ``RPM-GPG-KEY-doca``).
  Its payload is read with librpm, as ``rpm2cpio`` would, and never installed: only the members under that
  directory are written, each checked as an archive member is (``archive``);
- an unpacked copy of NVIDIA's online tree ``doca/<ver>/<distro>/<arch>/`` (``linux.mellanox.com/public/repo/
  doca/3.1.0/rhel9.6/x86_64/``), imported by a path that ends so.

What a repository is comes from what NVIDIA's files carry, read once at registration and stored: the DOCA
version and the distro from the ``doca-host`` package's version and release (its last ``_`` field, the distro
without its dot: ``rhel95``; from DOCA 3.2 a major alone, ``rhel9``), or from the online tree's path; the OFED
driver version from the ``MLNX_OFED_SRC-<ofed>.tgz`` the repository holds, in ``doca-ofed-source`` or, in DOCA
3.1.0, in ``doca-extra`` itself (``rollandf/doca-driver-build`` ``docs/install-pl-deprecation-plan.md``, B.1.1:
``doca-ofed-source`` is a later split); the arch from the arch-specific packages. Never from a metapackage's
release: that is the build number alone (dnf fetching ``doca-kernel-3.1.0-091000.x86_64.rpm`` from the 3.1.0
rhel9.6 repository, in a public how-to). The per-kernel rebuild needs ``doca-extra``
(``/opt/mellanox/doca/tools/doca-kernel-support``) and the driver sources: a repository without either is
refused, saying which is missing. Those are the build's tools, not packages for an image, so a published
version leaves them out, with the wrapper packages (``doca-host``, ``doca-kernel-repo``).

Generations (what the public sources show; ``docs/testing.md`` lists the same with the test model):
2.9/2.10 LTS, 3.0 and 3.1: GA ``kmod-*`` for a RHEL minor (``rhel9.5``), the driver sources inside ``doca-extra``
(``doca-ofed-source`` is a later split); 3.2 and later: ``*-dkms`` only, one repository per major (``rhel9``),
sources in ``doca-ofed-source``.
"""

import hashlib
import os
import re
import shutil
import stat
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from ofedrepo.bundles.archive import Limits, extract_payload, is_regular_inside
from ofedrepo.bundles.names import DOCA_VERSION, BundleIdentity
from ofedrepo.bundles.unpack import OpenedBundle, marked_root, real_packages
from ofedrepo.bundles.vendor import (
    COLLECTED,
    Note,
    OpenedOutput,
    Registration,
    StoredBundle,
    ToolEnded,
    ToolRun,
    Workspace,
)
from ofedrepo.distro import names_distro, ofed_distro_for_kernel, parse_ofed_distro
from ofedrepo.errors import BuildFailed, InvalidInput, NotABundle
from ofedrepo.kernel import RPM_ARCHES, parse_kernel_release
from ofedrepo.kinds import BundleKind
from ofedrepo.rpmfile import PackageHeader, module_kernels, open_payload, read_header
from ofedrepo.storage import remove_tree
from ofedrepo.untrusted import ScratchDir, shown

RPM_MAGIC = b"\xed\xab\xee\xdb"
LOCAL_REPO_PACKAGE = "doca-host"
EXTRA = "doca-extra"
SOURCE = "doca-ofed-source"
WRAPPER = "doca-kernel-repo"
TOOL_NAME = "doca-kernel-support"
#: Where doca-extra and doca-ofed-source install (the tool finds its resources there by absolute path).
TOOLS_PREFIX = "/opt/mellanox/doca"
TOOL = f"{TOOLS_PREFIX}/tools/{TOOL_NAME}"
VENDOR_KEY = "RPM-GPG-KEY-doca"
#: Packages of the repository that no published version holds: the rebuild's tools and repository wrappers.
NOT_PUBLISHED = {
    EXTRA: "doca-kernel-support itself: the rebuild's tool, not for an image",
    SOURCE: "the driver sources doca-kernel-support builds from, not for an image",
    LOCAL_REPO_PACKAGE: "the wrapper of the repository ofedrepo publishes from",
    WRAPPER: "a wrapper of a kernel repository; ofedrepo publishes the packages inside",
}
#: The DOCA profiles and their userspace variants, and ``doca-kernel``: their version is the DOCA version (their
#: release the build number alone).
METAPACKAGES = frozenset(
    {f"doca-{profile}{variant}" for profile in ("ofed", "all", "networking", "roce") for variant in ("", "-userspace")}
    | {"doca-kernel"}
)
#: The userspace stack without DKMS, and the prefix of the kernel metapackage doca-kernel-support makes.
USERSPACE = "doca-ofed-userspace"
KERNEL_METAPACKAGE_PREFIX = "doca-kernel-"
_OFED_SOURCE = re.compile(r"MLNX_OFED_SRC-(?:[a-z][a-z0-9.]*-)?(?P<version>[0-9]+\.[0-9]+-[0-9]+(?:\.[0-9]+)*)\.tgz")
_COMPACT_DISTRO = re.compile(r"(?P<family>[a-z]+)(?P<digits>[0-9]+)(?P<service_pack>sp[0-9]+)?")
#: Distros numbered by year and month (``ubuntu24.04``, ``openeuler22.03``): two digits of major release.
_YEAR_VERSIONED = frozenset({"ubuntu", "openeuler"})
#: NVIDIA's online tree, as the end of an imported directory's path.
_ONLINE_TREE = re.compile(
    r"(?:^|/)doca/(?P<doca>[0-9]+\.[0-9]+\.[0-9]+)/(?P<distro>[a-z]+[0-9][0-9.]*)/(?P<arch>[a-z0-9_-]+)/*\Z"
)
#: The online tree's arch directories: rpm's names, and NVIDIA's for Arm servers (``sbsa-arm64`` in 2.9.1 and
#: 2.10.0, ``arm64-sbsa`` in 3.3.0: linux.mellanox.com URLs in public install scripts). ``arm64-dpu`` is
#: BlueField's own, not a host's.
_TREE_ARCHES = {
    **{arch: arch for arch in RPM_ARCHES if arch != "noarch"},
    "sbsa-arm64": "aarch64",
    "arm64-sbsa": "aarch64",
}
#: doca-kernel-support's only word on where it builds (its work directory is a mktemp under /tmp: letters and
#: digits from mktemp(1), with underscores from other mkdtemp implementations).
BUILDING_UNDER = re.compile(rb"Building under (/tmp/DOCA\.[A-Za-z0-9_]{1,64})\s*$")
_LOCAL_REPO = re.compile(rf"/usr/share/(?P<host>{LOCAL_REPO_PACKAGE}-[^/]+)/repo/")
#: What ``doca-kernel-repo`` installs: ``/usr/share/doca-host-<ver>[-<build>...]/Modules/<K>/*.rpm``.
_MODULES = re.compile(
    rf"/usr/share/{LOCAL_REPO_PACKAGE}-(?P<doca>[0-9]+\.[0-9]+\.[0-9]+)(?:-[^/]*)?/Modules/(?P<kernel>[^/]+)/(?P<name>[^/]+\.rpm)"
)
#: ``doca-host-<ver>``, or ``doca-host-<ver>-<build>...`` (NVIDIA's Debian package names it so): the directory
#: that holds a local repository or a kernel repository's ``Modules/``.
_HOST_DIRECTORY = re.compile(rf"{LOCAL_REPO_PACKAGE}-(?P<doca>[0-9]+\.[0-9]+\.[0-9]+)(?:-.*)?")


def is_rpm_file(path: Path) -> bool:
    """A package file, by its lead's magic."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) == RPM_MAGIC
    except OSError:
        return False


def _package_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.rpm")):
        if "repodata" not in path.relative_to(root).parts:
            yield path


def doca_kernel_support_argv(sources: Path, ofed_sources: str) -> list[str]:
    """DOCA's per-kernel rebuild: ``doca-kernel-support -s <kernel sources> -t <driver sources>``.

    ``-s``, never ``-k``: ``-k`` looks for ``/lib/modules/<K>/build``, which EL9's kernel-devel does not make,
    so it fails in every builder. ``-t`` names the repository's own driver sources: without it the tool takes
    whatever ``MLNX_OFED_*.tgz`` its resources directory holds. Its packages come out wrapped in one
    ``doca-kernel-repo`` package, which ofedrepo unwraps (``--dirty`` would keep them loose, but without the
    ``doca-kernel-<K>`` metapackage that the wrapper's repository holds).
    """
    return ["bash", TOOL, "-s", str(sources), "-t", ofed_sources]


def package_list(present: Collection[str]) -> list[str]:
    """As NVIDIA has hosts install a kernel repo that doca-kernel-support made: ``doca-ofed-userspace``
    (everything but kernel packages: no DKMS), the ``doca-kernel-<K'>`` metapackage of the modules built for the
    kernel, and ``mlnx-fw-updater`` ([B2], [D2]). A version of a kernel NVIDIA built for has no such
    metapackage: its ``doca-ofed`` installs the stock kmods."""
    kernel = sorted(
        name for name in present if name.startswith(KERNEL_METAPACKAGE_PREFIX) and not name.startswith(WRAPPER)
    )
    chosen = [USERSPACE, kernel[0]] if kernel else ["doca-ofed" if "doca-ofed" in present else USERSPACE]
    return [*chosen, *(["mlnx-fw-updater"] if "mlnx-fw-updater" in present else [])]


def parse_compact_distro(text: str) -> str:
    """``rhel95`` → ``rhel9.5``, ``rhel9`` → ``rhel9``, ``rhel100`` → ``rhel10.0``, ``ubuntu2404`` →
    ``ubuntu24.04``, ``sles15sp6`` → ``sles15sp6``: the ``doca-host`` package's release writes the distro
    without its dot; ofedrepo's tags (and images) have it. SUSE's service pack is already how MLNX_OFED's tags
    write it."""
    match = _COMPACT_DISTRO.fullmatch(text) if len(text) <= 32 else None
    if not match:
        raise NotABundle(f"cannot read a distro from {text[:40]!r}")
    family, digits = match.group("family"), match.group("digits")
    if family in _YEAR_VERSIONED:
        major_length = 2
    else:
        major_length = 2 if digits.startswith("1") and len(digits) >= 2 else 1
    major, minor = digits[:major_length], digits[major_length:]
    service_pack = match.group("service_pack") or ""
    return parse_ofed_distro(f"{family}{major}" + (f".{minor}" if minor else "") + service_pack).tag


def _single(headers: dict[str, PackageHeader], name: str) -> str:
    found = [key for key, header in headers.items() if header.name == name]
    if not found:
        return ""
    if len(found) > 1:
        raise NotABundle(f"the repository holds {len(found)} {name} packages: {', '.join(sorted(found)[:4])}")
    return found[0]


def _driver_sources(headers: dict[str, PackageHeader], candidates: list[str]) -> tuple[str, str]:
    """(the package holding ``MLNX_OFED_SRC-<ofed>.tgz``, that file's installed path): one, in doca-ofed-source
    or doca-extra, under /opt/mellanox/doca."""
    found = [
        (key, name)
        for key in candidates
        for name in headers[key].files
        if name.startswith(TOOLS_PREFIX + "/") and _OFED_SOURCE.fullmatch(PurePosixPath(name).name)
    ]
    if len(found) != 1:
        where = " or ".join(PurePosixPath(key).name for key in candidates)
        raise NotABundle(
            f"{where} should install one {TOOLS_PREFIX}/.../MLNX_OFED_SRC-<ofed>.tgz (the driver sources "
            f"doca-kernel-support builds from); {'none is' if not found else f'{len(found)} are'} there"
        )
    return found[0]


def _named_tree(names: Sequence[str]) -> tuple[str, str, str, str] | None:
    """(DOCA version, distro tag, arch, the path's words) from the first name ending like NVIDIA's online tree."""
    for name in names:
        match = _ONLINE_TREE.search(name) if len(name) <= 4096 else None
        if match:
            tree = f"doca/{match['doca']}/{match['distro']}/{match['arch']}"
            arch = _TREE_ARCHES.get(match["arch"])
            try:
                distro = parse_ofed_distro(match["distro"]).tag
            except InvalidInput:
                continue
            if arch is not None:
                return match["doca"], distro, arch, tree
    return None


def identify(
    headers: dict[str, PackageHeader], local_repo: PackageHeader | None, names: Sequence[str]
) -> tuple[BundleIdentity, dict[str, Any]]:
    """The repository's identity and the facts its builds need, from its packages' headers and what tells its
    DOCA version and distro: the ``doca-host`` package, or the online tree's path among ``names``."""
    extra = _single(headers, EXTRA)
    if not extra:
        raise NotABundle(
            f"a DOCA-OFED repository without {EXTRA}: ofedrepo rebuilds its kernel modules with {TOOL_NAME}, which "
            f"{EXTRA} installs; add it from the same DOCA release"
        )
    if TOOL not in headers[extra].files:
        raise NotABundle(f"{EXTRA} does not install {TOOL}")
    source = _single(headers, SOURCE)
    source_package, ofed_source = _driver_sources(headers, [key for key in (source, extra) if key])
    match = _OFED_SOURCE.fullmatch(PurePosixPath(ofed_source).name)
    assert match is not None
    if local_repo is not None:
        doca_version = local_repo.version
        distro = parse_compact_distro(local_repo.release.rsplit("_", 1)[-1])
        path_arch = local_repo.arch if local_repo.arch != "noarch" else None
        identified_by = local_repo.nevra
    else:
        named = _named_tree(names)
        if named is None:
            raise NotABundle(
                "cannot tell this DOCA-OFED repository's version and distro: import NVIDIA's online tree by a path "
                "ending in doca/<version>/<distro>/<arch> (e.g. .../doca/3.1.0/rhel9.6/x86_64), or upload the "
                f"{LOCAL_REPO_PACKAGE} package"
            )
        doca_version, distro, path_arch, identified_by = named
    if not DOCA_VERSION.fullmatch(doca_version):
        raise NotABundle(f"{identified_by}: {doca_version[:40]!r} is not a DOCA version")
    for header in headers.values():
        if header.name in METAPACKAGES and header.version != doca_version:
            raise NotABundle(
                f"{identified_by} says DOCA {doca_version}, but the repository holds {header.nevra}: packages of "
                "another DOCA release"
            )
    arches = {header.arch for header in headers.values() if header.arch != "noarch"}
    if path_arch is not None:
        arches.add(path_arch)
    if len(arches) != 1 or not arches <= set(RPM_ARCHES):
        found = ", ".join(sorted(arches)[:4]) or "none"
        raise NotABundle(f"a DOCA repository holds the packages of one architecture; this one: {found}")
    identity = BundleIdentity(
        ofed_version=match["version"],
        distro=distro,
        arch=arches.pop(),
        kind=BundleKind.DOCA,
        doca_version=doca_version,
    )
    left_out = {key: NOT_PUBLISHED[header.name] for key, header in headers.items() if header.name in NOT_PUBLISHED}
    facts = {
        "identified_by": identified_by,
        "tool_package": extra,
        "source_package": source_package,
        "ofed_source": ofed_source,
        "packages": sorted(key for key in headers if key not in left_out),
        "left_out": left_out,
    }
    return identity, facts


def tool_checksum(extra: Path) -> str:
    """The sha256 of ``doca-kernel-support`` as ``doca-extra`` installs it."""
    with open_payload(extra) as (_, archive):
        for entry in archive:
            if entry.name == TOOL and stat.S_ISREG(entry.mode):
                digest = hashlib.sha256()
                while chunk := archive.read(1024 * 1024):
                    digest.update(chunk)
                return digest.hexdigest()
    raise NotABundle(f"{extra.name} does not install {TOOL}")


def _vendor_key(root: Path) -> str | None:
    key = next((path for path in sorted(root.rglob(VENDOR_KEY)) if is_regular_inside(path, root)), None)
    return key.read_text(errors="replace")[:65536] if key else None


def read_doca_tree(
    root: Path, owned: bool, names: Sequence[str], local_repo: PackageHeader | None = None
) -> Registration:
    """Identify the DOCA repository at ``root``: what its row stores."""
    packages = real_packages(root, list(_package_files(root)))
    if not packages:
        raise NotABundle(f"not a DOCA-OFED repository: {root.name} holds no packages")
    headers = {relative: read_header(root / relative) for relative in packages}
    identity, facts = identify(headers, local_repo, names)
    kernels = sorted({kernel for header in headers.values() for kernel in module_kernels(header.files)})
    opened = OpenedBundle(root, identity, facts["packages"], _vendor_key(root), kernels, None, owned)
    return Registration(opened, kernels, tool_checksum(root / facts["tool_package"]), facts)


def unpack_local_repo(package: Path, version: str, destination: Path, limits: Limits) -> None:
    """Write the repository in ``doca-host-*.rpm``'s payload into ``destination``; the ``.repo`` file it would
    install is skipped. The repository is at ``/usr/share/doca-host-<ver>/repo/`` (a public installer of 3.2.1
    reads ``/usr/share/doca-host-3.2.1/repo/Packages``; NVIDIA's Debian package names the directory
    ``doca-host-<ver>-<build>-<ofed>-<distro>``): one such directory, of the package's own ``version``."""
    found: set[str] = set()

    def select(name: str) -> str | None:
        match = _LOCAL_REPO.match(name)
        if match is None or match.end() == len(name):
            return None
        found.add(match.group(0))
        return name[match.end() :] if len(found) == 1 else None

    written = extract_payload(package, destination, limits, select)
    if len(found) > 1:
        raise NotABundle(
            f"{package.name} holds {len(found)} repositories ({', '.join(sorted(found)[:3])}): one is read"
        )
    if not written:
        where = f"/usr/share/{LOCAL_REPO_PACKAGE}-<version>/repo/"
        raise NotABundle(f"{package.name} holds nothing under {where}: not a DOCA-Host local repository")
    (directory,) = found
    host = _HOST_DIRECTORY.fullmatch(directory.split("/")[3])
    if host is None or host["doca"] != version:
        raise NotABundle(f"{package.name} is DOCA-Host {version[:24]}, but its repository is {directory[:120]}")


def unpack_tools(packages: list[Path], destination: Path, limits: Limits) -> Path:
    """``doca-extra`` and the driver sources' package as they would install under ``/opt/mellanox/doca``, into
    ``destination``, the directory to mount there: the tool finds its resources by that absolute path."""
    prefix = TOOLS_PREFIX + "/"
    for package in packages:
        extract_payload(
            package, destination, limits, lambda name: name[len(prefix) :] if name.startswith(prefix) else None, "skip"
        )
    return destination


def unwrap_kernel_repo(wrapper: Path, kernel: str | None, destination: Path, limits: Limits) -> tuple[str, str]:
    """Write the packages of ``doca-kernel-repo-*.rpm``'s repository (``/usr/share/doca-host-<ver>/Modules/<K>/``)
    into ``destination``; (its DOCA version, its kernel). One kernel's repository, ``kernel``'s when given."""
    found: set[tuple[str, str]] = set()

    def select(name: str) -> str | None:
        match = _MODULES.fullmatch(name)
        if match is None or (kernel is not None and match["kernel"] != kernel):
            return None
        found.add((match["doca"], match["kernel"]))
        return match["name"] if len(found) == 1 else None

    extract_payload(wrapper, destination, limits, select, links="skip")
    where = f"/usr/share/{LOCAL_REPO_PACKAGE}-*/Modules/{kernel or '<kernel>'}/"
    if not found or not _package_paths(destination):
        raise NotABundle(f"{wrapper.name} holds no package under {where}")
    kernels = {found_kernel for _, found_kernel in found}
    if len(kernels) > 1:
        raise NotABundle(f"{wrapper.name} holds the repositories of {len(kernels)} kernels; name one with --kernel")
    if len(found) > 1:
        releases = ", ".join(sorted(doca for doca, _ in found)[:4])
        raise NotABundle(f"{wrapper.name} holds {kernels.pop()}'s repository for several DOCA releases ({releases})")
    return found.pop()


def local_repo_header(package: Path) -> PackageHeader:
    """The ``doca-host`` package's header (what names the DOCA version and distro); refused if it is another."""
    try:
        header = read_header(package)
    except InvalidInput:
        raise NotABundle(f"{package.name}: not a readable DOCA-Host local repository package") from None
    if header.name != LOCAL_REPO_PACKAGE:
        raise NotABundle(f"{package.name}: a {header.name} package, not {LOCAL_REPO_PACKAGE}")
    return header


def _header_name(path: Path) -> str:
    """A package's name from its header; empty for what is not a readable package."""
    try:
        return read_header(path).name if path.is_file() and not path.is_symlink() else ""
    except InvalidInput:
        return ""


def _wrapper_header(package: Path) -> None:
    """Refuse, saying what it is instead, a package that is not a ``doca-kernel-repo``."""
    name = _header_name(package)
    if name == WRAPPER:
        return
    hint = " (a DOCA repository: register it with ofedrepo bundle add)" if name == LOCAL_REPO_PACKAGE else ""
    shown_name = name[:60] or "unreadable"
    raise InvalidInput(f"{package.name} is a {shown_name} package, not {WRAPPER}{hint}: nothing to publish")


def _package_paths(directory: Path) -> list[Path]:
    """The package files of an unwrapped kernel repository: regular files only (a wrapper may hold a directory
    named ``*.rpm``)."""
    return sorted(path for path in directory.glob("*.rpm") if path.is_file() and not path.is_symlink())


def _top_dir(seen: list[str]) -> str:
    """Where doca-kernel-support built, from its ``Building under /tmp/DOCA.XXXXXXXXXX`` line: the name of a
    directory of its ``/tmp`` (opened through ``ScratchDir``, which refuses anything but a real directory)."""
    if not seen:
        raise BuildFailed("doca-kernel-support did not say where it built (no 'Building under /tmp/DOCA.*' line)")
    return seen[-1].removeprefix("/tmp/")


def _combined(stored: OpenedBundle, rebuilt: Path, scratch: Path) -> OpenedBundle:
    """The repository's publishable packages and the rebuilt ones, as one package set under ``scratch``."""
    combined = scratch / "combined"
    combined.mkdir()
    (combined / "bundle").symlink_to(stored.root)
    os.rename(rebuilt, combined / "rebuilt")
    rebuilt_packages = [f"rebuilt/{path.name}" for path in _package_paths(combined / "rebuilt")]
    packages = [f"bundle/{key}" for key in stored.packages] + rebuilt_packages
    return replace(stored, root=combined, packages=packages, owned=False, rebuilt=frozenset(rebuilt_packages))


class DocaOfed:
    """The ``Vendor`` of DOCA-OFED repositories."""

    kind = BundleKind.DOCA
    tool = TOOL_NAME

    def recognises(self, source: Path) -> bool:
        """A package file (the local-repo package), or a directory of DOCA's own packages (``doca-*``) without
        MLNX_OFED's ``.mlnx``: read as a DOCA repository, and refused as one, saying what it lacks."""
        if source.is_file():
            return is_rpm_file(source)
        if not source.is_dir() or marked_root(source) is not None:
            return False
        return any(path.name.startswith("doca-") for path in _package_files(source))

    @contextmanager
    def register(
        self, source: Path, names: Sequence[str], workspace: Workspace, progress: Note | None
    ) -> Iterator[Registration]:
        if progress:
            progress(f"Reading the DOCA-OFED repository {source.name}")
        if source.is_dir():
            yield read_doca_tree(source, False, names)
            return
        header = local_repo_header(source)
        scratch = workspace.data.new_scratch(workspace.data.work, "unpack")
        try:
            unpack_local_repo(source, header.version, scratch / "repo", workspace.limits)
            yield read_doca_tree(scratch / "repo", True, names, local_repo=header)
        finally:
            remove_tree(scratch)

    @contextmanager
    def open_stored(self, stored: StoredBundle, workspace: Workspace, note: Note) -> Iterator[OpenedBundle]:
        facts = self._facts(stored)
        for key, reason in sorted(facts["left_out"].items()):
            note(f"not published: {PurePosixPath(key).name}: {reason}")
        yield OpenedBundle(
            stored.root, stored.identity, list(facts["packages"]), _vendor_key(stored.root), [], None, False
        )

    @staticmethod
    def _facts(stored: StoredBundle) -> dict[str, Any]:
        """The row's facts; a repository registered before ofedrepo stored them is read once more."""
        if stored.facts.get("packages") is not None:
            return dict(stored.facts)
        packages = real_packages(stored.root, list(_package_files(stored.root)))
        headers = {relative: read_header(stored.root / relative) for relative in packages}
        tree = f"doca/{stored.identity.doca_version}/{stored.identity.distro}/{stored.identity.arch}"
        return identify(headers, None, [tree])[1]

    def confirm_names(self, identity: BundleIdentity, names: Sequence[str]) -> None:
        """The same tree imported again by a path naming another release, distro or arch is refused, as it would
        have been the first time (its content, not its path, made the checksum that found it)."""
        named = _named_tree(names)
        if named is not None and named[:3] != (identity.doca_version, identity.distro, identity.arch):
            raise NotABundle(
                f"this repository is registered as {identity.name}, but its path names {named[3]}: packages of "
                "another release, distro or arch than the path says"
            )

    def fits_distro(self, bundle_distro: str, wanted: str) -> bool:
        """A repository of the tag (``rhel9.6``), or of its major (from DOCA 3.2 NVIDIA publishes one repository
        per major release, ``rhel9``, for every minor); a kernel that names a major release alone (UEK's ``ol8``)
        fits the repositories of its minors."""
        return bundle_distro == wanted.split(".", 1)[0] or names_distro(wanted, bundle_distro)

    def tool_run(
        self, stored: StoredBundle, kernel: str, sources: Path, scratch: Path, workspace: Workspace
    ) -> ToolRun:
        """doca-kernel-support from the repository's own doca-extra and driver sources, unpacked (not installed)
        and mounted where they would install; it builds under its ``/tmp``, a directory of the scratch."""
        facts = self._facts(stored)
        packages = sorted({facts["tool_package"], facts["source_package"]})
        tools = unpack_tools([stored.root / key for key in packages], scratch / "tools", workspace.limits)
        tmp = scratch / "tmp"
        tmp.mkdir()
        return ToolRun(
            TOOL_NAME,
            doca_kernel_support_argv(sources, facts["ofed_source"]),
            [stored.root, sources],
            logs=tmp,
            output=tmp,
            placed=[(tools, TOOLS_PREFIX)],
            tmp=tmp,
            signing_switch={"WITH_MOD_SIGN": "1"},
            watch=BUILDING_UNDER,
        )

    @contextmanager
    def collect(
        self,
        stored: StoredBundle,
        kernel: str,
        run: ToolRun,
        ended: ToolEnded,
        scratch: Path,
        workspace: Workspace,
        note: Note,
    ) -> Iterator[OpenedBundle | None]:
        """The wrapper package's repository, unwrapped, with the repository's userspace packages."""
        top = _top_dir(ended.seen)
        with ScratchDir(run.output) as made:
            names = made.names(top)
            wrappers = [name for name in names if name.startswith(f"{WRAPPER}-") and name.endswith(".rpm")]
            if len(wrappers) != 1:
                found = ", ".join(shown(name) for name in names[:20]) or "nothing"
                raise BuildFailed(f"expected one {WRAPPER}-*.rpm from {TOOL_NAME} in {top}, found {found}")
            note(f"{TOOL_NAME} produced {shown(wrappers[0])}")
            wrapper = made.collect(f"{top}/{wrappers[0]}", scratch / COLLECTED, workspace.limits.max_bytes)
        try:
            unwrap_kernel_repo(wrapper, kernel, scratch / "rebuilt", workspace.limits)
        except NotABundle as error:
            raise BuildFailed(str(error)) from None
        with self.open_stored(stored, workspace, note) as opened:
            yield _combined(opened, scratch / "rebuilt", scratch)

    def recognises_output(self, source: Path) -> bool:
        """A package file (MLNX_OFED's output is an archive or a directory; ``open_output`` says when the package
        is not a ``doca-kernel-repo``, whatever its file is called), or a directory holding a ``doca-kernel-<K'>``
        metapackage, by its header (its ``Modules/<K>/`` repository; the repository's own ``doca-kernel`` is not
        one)."""
        if source.is_file():
            return is_rpm_file(source)
        return source.is_dir() and any(
            _header_name(path).startswith(KERNEL_METAPACKAGE_PREFIX) and not path.name.startswith(WRAPPER)
            for path in sorted(source.glob(f"{KERNEL_METAPACKAGE_PREFIX}*.rpm"))[:16]
        )

    @contextmanager
    def open_output(
        self,
        source: Path,
        kernel: str | None,
        registered: Callable[[BundleKind], list[StoredBundle]],
        workspace: Workspace,
        note: Note,
    ) -> Iterator[OpenedOutput]:
        """The kernel's packages (from the wrapper, or its ``Modules/<K>/`` directory) with the userspace packages
        of the registered DOCA repository they were built from: the same DOCA version and arch, for the kernel's
        distro where the kernel tells it. Where repositories of several distros match, which one is not guessed:
        publish through a build instead. The kernel is the one the wrapper's path names."""
        scratch = workspace.data.new_scratch(workspace.data.work, "doca-output")
        try:
            rebuilt = scratch / "rebuilt"
            if source.is_file():
                _wrapper_header(source)
                doca_version, kernel = unwrap_kernel_repo(source, kernel, rebuilt, workspace.limits)
            else:
                doca_version, kernel = self._modules_directory(source, kernel, rebuilt)
            release = parse_kernel_release(kernel)
            if release.arch is None:
                raise InvalidInput(f"{source.name} holds packages for {kernel}, a kernel that names no architecture")
            distro = ofed_distro_for_kernel(release)
            if distro is None:  # every repository of the release would fit: which userspace is not guessed
                raise InvalidInput(
                    f"cannot tell which distro {kernel} is for, so which registered DOCA repository's userspace goes "
                    "with it: publish it through a build (a request with its distro)"
                )
            fitting = [
                stored
                for stored in registered(BundleKind.DOCA)
                if (stored.identity.doca_version, stored.identity.arch) == (doca_version, release.arch)
                and self.fits_distro(stored.identity.distro, distro.tag)
            ]
            names = sorted({stored.name for stored in fitting})
            if len(names) != 1:  # the same repository registered twice (its package and its tree) is one
                listed = ", ".join(names) or "none is registered"
                raise InvalidInput(
                    f"{source.name} was built from DOCA {doca_version} for {kernel}: publishing it needs the one "
                    f"registered DOCA repository of that release, {release.arch} and {distro} (ofedrepo bundle add); "
                    f"{listed}"
                )
            note(f"with the userspace packages of {fitting[0].name}")
            with self.open_stored(fitting[0], workspace, note) as opened:
                yield OpenedOutput(_combined(opened, rebuilt, scratch), kernel)
        finally:
            remove_tree(scratch)

    @staticmethod
    def _modules_directory(source: Path, kernel: str | None, destination: Path) -> tuple[str, str]:
        """A copy of the packages of ``.../doca-host-<ver>/Modules/<K>/``: the path tells the version and kernel."""
        absolute = Path(os.path.abspath(source))
        parent = absolute.parent
        host = _HOST_DIRECTORY.fullmatch(parent.parent.name)
        if parent.name != "Modules" or host is None:
            raise InvalidInput(
                f"{source}: a directory of DOCA kernel packages is published from where the wrapper installs it, "
                f"/usr/share/{LOCAL_REPO_PACKAGE}-<version>/Modules/<kernel>/; or publish the {WRAPPER} package"
            )
        if kernel is not None and kernel != absolute.name:
            raise InvalidInput(f"{source} holds the packages of {absolute.name}, not {kernel}")
        parse_kernel_release(absolute.name)
        destination.mkdir(parents=True)
        for package in sorted(absolute.glob("*.rpm")):
            if not is_regular_inside(package, absolute):
                raise InvalidInput(f"{package.name}: not a file inside {source}")
            shutil.copyfile(package, destination / package.name)
        return host["doca"], absolute.name

    def dib_packages(self, present: Collection[str]) -> list[str]:
        return package_list(present)
