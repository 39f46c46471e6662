"""What one repo version holds: one consistent package set for one kernel (pure: decides on headers alone).

A bundle that add-kernel-support rebuilt holds more than the packages of one kernel: the stock ``-devel``
built for the GA kernel, the GA ``kmod-*`` packages that 4.x copies of the script keep, an earlier
rebuild's packages; and its stock ``mlnx-ofed-<group>`` metadata packages still require ``kmod-*``
packages that 5.x copies of the script deleted, so ``yum install mlnx-ofed-<group>`` cannot resolve.
``choose`` decides, with a reason for every package it does not publish as it is:

1. a package built for another kernel is left out: it installs modules under ``/lib/modules/<other>/``
   or a build tree under ``/usr/src/ofa_kernel/<arch>/<other>/``, or its release says ``.kver.<other>``;
   so is a DKMS package (``*-dkms``, DOCA-OFED's only kernel packages from DOCA 3.2): it would compile its
   modules on the node at install time, where the version holds them built for the kernel already;
2. the same package (name, EVR, arch) reached twice is kept once; a debug package (``*-debuginfo``,
   ``*-debugsource``: doca-kernel-support's harvest holds a 47 MB ``kmod-mlnx-ofa_kernel-debuginfo``,
   rollandf/doca-driver-build ``docs/install-pl-deprecation-plan.md`` §11.6) is left out: no package list
   installs symbols;
3. a package of the repository whose name and arch a package built for this kernel also has is left out: the
   rebuilt ``mlnx-ofa_kernel``, ``knem`` or ``-source`` stands next to the stock one, and with both in one
   version dnf would choose by how their dist tags sort (``.rhel9u6`` against the builder's ``.rocky9u6``;
   confluent-docs' DOCA 2.10/3.0 how-tos patch the tool over such "down-levelled" packages). "Built for this
   kernel" is what ``is_for`` says, or the tool's own output (``rebuilt``) where a KMP build's userspace package
   names no kernel;
4. a metadata package (requirements and nothing but documentation, whatever its arch) with a requirement that
   no kept package satisfies is rewritten: a requirement on a kernel package (``kmod-*``, ``*-kmp-*``, or one
   that only left-out packages provide) becomes an exact ``=`` on the packages built for this kernel that
   install the same modules, or failing that have the non-KMP name (``kmod-<x>`` → ``<x>-modules``, ``<x>``,
   ``<x>`` without ``-mlnx``; ``<x>-dkms`` → ``kmod-<x>``, ``kmod-<x>-mlnx``, ``<x>-modules``); one with no
   counterpart is dropped, and the note says so;
5. any other package that requires what only left-out packages provide is left out too, until nothing
   more changes.

``infer_kernel`` tells, from the same headers, which kernel a bundle was rebuilt for.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

import rpm

from ofedrepo.errors import InvalidInput
from ofedrepo.kernel import parse_kernel_release
from ofedrepo.rpmfile import Dependency, PackageHeader, module_kernels

_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
_MODULE_ROOTS = ("/lib/modules/", "/usr/lib/modules/")
_OFA_KERNEL_TREES = PurePosixPath("/usr/src/ofa_kernel")
_KVER = ".kver."
_KMP_FLAVOR = re.compile(r"-kmp-[a-z0-9_]+$")
_DOCS = "/usr/share/doc/"
_DKMS = "-dkms"
_DEBUG_SUFFIXES = ("-debuginfo", "-debugsource")


@dataclass(frozen=True)
class LeftOut:
    key: str
    nevra: str
    reason: str


@dataclass(frozen=True)
class Rewrite:
    """A metadata package to regenerate for the kernel, with requirements that resolve in this version."""

    key: str
    original: PackageHeader
    requires: tuple[Dependency, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Selection:
    kernel: str
    kept: tuple[str, ...]
    """Packages published as they are."""
    left_out: tuple[LeftOut, ...]
    rewrites: tuple[Rewrite, ...]
    """Packages replaced by a regenerated package of the same name (their original is not published)."""


def kver_tag(kernel: str) -> str:
    """How rebuilt packages name their kernel in the release: ``.kver.<kernel with '-' made '_'>``."""
    return kernel.replace("-", "_")


def built_for(header: PackageHeader) -> frozenset[str]:
    """Kernels whose module tree or OFED build tree (``/usr/src/ofa_kernel/<arch>/<K>``) the package fills."""
    kernels = set(module_kernels(header.files))
    for name in header.files:
        path = PurePosixPath(name)
        if path.is_relative_to(_OFA_KERNEL_TREES) and len(path.parts) > len(_OFA_KERNEL_TREES.parts) + 2:
            kernels.add(path.parts[len(_OFA_KERNEL_TREES.parts) + 1])
    return frozenset(kernels)


def release_kernel_tag(header: PackageHeader) -> str | None:
    """The ``<K_>`` of a release ending ``.kver.<K_>`` (non-KMP rebuilds), None otherwise."""
    _, found, tag = header.release.rpartition(_KVER)
    return tag if found and tag else None


def other_kernel_reason(header: PackageHeader, kernel: str) -> str | None:
    """Why ``header`` belongs to another kernel than ``kernel``; None when it fits or is kernel-independent."""
    others = sorted(built_for(header) - {kernel})
    if others:
        return f"built for {', '.join(others)}, not {kernel}"
    tag = release_kernel_tag(header)
    if tag is not None and tag != kver_tag(kernel):
        return f"its release {header.release} names another kernel than {kernel}"
    return None


def is_for(header: PackageHeader, kernel: str) -> bool:
    """A kernel package built for ``kernel`` (modules or build tree there, or ``.kver.<K_>``)."""
    return other_kernel_reason(header, kernel) is None and (
        kernel in built_for(header) or release_kernel_tag(header) == kver_tag(kernel)
    )


def is_metapackage(header: PackageHeader) -> bool:
    """Requirements on packages and no file but documentation (a release file included), whatever its arch:
    only its requirements matter. MLNX_OFED's ``mlnx-ofed-<group>`` are noarch with one
    ``%{_docdir}/<name>/<name>-release`` (``create_mlnx_ofed_installers.pl``); DOCA's ``doca-ofed``,
    ``doca-roce`` and ``doca-kernel`` are x86_64 packages (dnf fetching ``doca-kernel-3.1.0-091000.x86_64.rpm``
    in a public how-to), so the arch tells nothing."""
    return any(_matters(requirement) for requirement in header.requires) and all(
        name.startswith(_DOCS) for name in header.files
    )


def module_names(header: PackageHeader) -> frozenset[str]:
    """Basenames of the kernel modules a package installs (``mlx5_core`` for ``.../mlx5_core.ko.xz``)."""
    names = set()
    for name in header.files:
        if name.startswith(_MODULE_ROOTS) and name.endswith(_MODULE_SUFFIXES):
            base = name.rsplit("/", 1)[-1]
            names.add(base[: base.index(".ko")])
    return frozenset(names)


def _split_evr(evr: str) -> tuple[str, str, str]:
    epoch, _, rest = evr.rpartition(":")
    version, _, release = rest.partition("-")
    return (epoch or "0", version, release)


def compare_evr(left: str, right: str) -> int:
    """rpm's ordering of two ``[epoch:]version[-release]`` strings (a missing release matches any)."""
    left_evr, right_evr = _split_evr(left), _split_evr(right)
    if not left_evr[2] or not right_evr[2]:
        left_evr, right_evr = (left_evr[0], left_evr[1], ""), (right_evr[0], right_evr[1], "")
    return int(rpm.labelCompare(left_evr, right_evr))


def satisfies(provided: Dependency, required: Dependency) -> bool:
    """Whether a ``Provides`` entry meets a requirement (names equal, versions compared as rpm does)."""
    if provided.name != required.name:
        return False
    if not required.comparison or not provided.comparison:
        return True
    order = compare_evr(provided.version, required.version)
    return {
        "=": order == 0, "<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0,
    }[required.comparison]  # fmt: skip


def _matters(requirement: Dependency) -> bool:
    """Requirements on packages: not rpm features (``rpmlib(...)``) nor files, which the system provides."""
    return not requirement.name.startswith(("rpmlib(", "/", "config("))


class _Provides:
    """Which headers provide a name: requirements are looked up by name first (bundles hold hundreds)."""

    def __init__(self, headers: Iterable[PackageHeader]) -> None:
        self.by_name: dict[str, list[tuple[Dependency, PackageHeader]]] = {}
        for header in headers:
            for entry in header.provides:
                self.by_name.setdefault(entry.name, []).append((entry, header))

    def __call__(self, requirement: Dependency) -> list[PackageHeader]:
        found = [header for entry, header in self.by_name.get(requirement.name, []) if satisfies(entry, requirement)]
        return list(dict.fromkeys(found))


def _provided(requirement: Dependency, headers: Iterable[PackageHeader]) -> list[PackageHeader]:
    return _Provides(headers)(requirement)


def _names_kernel_package(name: str) -> bool:
    return name.startswith("kmod-") or name.endswith(_DKMS) or _KMP_FLAVOR.search(name) is not None


def _counterpart_names(name: str) -> tuple[str, ...]:
    """The names a kernel package built for this kernel may have, for a kernel package ``name`` left out."""
    if name.endswith(_DKMS):
        base = name.removesuffix(_DKMS)
        return (f"kmod-{base}", f"kmod-{base}-mlnx", f"{base}-modules")
    base = _KMP_FLAVOR.sub("", name.removeprefix("kmod-"))
    return (f"{base}-modules", base, base.removesuffix("-mlnx"))


def _newest_per_name(headers: list[PackageHeader]) -> list[PackageHeader]:
    newest: dict[str, PackageHeader] = {}
    for header in headers:
        if header.name not in newest or compare_evr(header.evr, newest[header.name].evr) > 0:
            newest[header.name] = header
    return [newest[name] for name in sorted(newest)]


def replacements(
    requirement: Dependency, left_out: list[PackageHeader], built: list[PackageHeader]
) -> list[PackageHeader]:
    """The packages built for the kernel that stand in for a kernel package the requirement names."""
    wanted = set().union(*(module_names(header) for header in _provided(Dependency(requirement.name), left_out)))
    if wanted:
        found = [header for header in built if module_names(header) & wanted]
        if found:
            return _newest_per_name(found)
    for name in _counterpart_names(requirement.name):
        found = [header for header in built if header.name == name]
        if found:
            return _newest_per_name(found)
    return []


def _rewrite(
    key: str, header: PackageHeader, kept: list[PackageHeader], left_out: list[PackageHeader], kernel: str
) -> Rewrite | None:
    built = [other for other in kept if is_for(other, kernel) and not is_metapackage(other)]
    provided_by_kept, provided_by_gone = _Provides(kept), _Provides(left_out)
    requires: list[Dependency] = []
    notes: list[str] = []
    for requirement in filter(_matters, header.requires):
        if provided_by_kept(requirement):
            requires.append(requirement)
            continue
        if not (_names_kernel_package(requirement.name) or provided_by_gone(Dependency(requirement.name))):
            requires.append(requirement)  # something the system provides: not ours to judge
            continue
        found = replacements(requirement, left_out, built)
        if found:
            exact = [Dependency(other.name, "=", other.evr) for other in found]
            requires += exact
            notes.append(f"{requirement} → {', '.join(map(str, exact))}")
        else:
            notes.append(f"{requirement} dropped: no package built for {kernel} stands in for it")
    if not notes:
        return None
    return Rewrite(key=key, original=header, requires=tuple(dict.fromkeys(requires)), notes=tuple(notes))


def _not_published_reason(header: PackageHeader, kernel: str) -> str | None:
    if header.name.endswith(_DKMS):
        return f"a DKMS package: it would compile its modules on the node; this version holds them built for {kernel}"
    if header.name.endswith(_DEBUG_SUFFIXES):
        return "debug symbols: no package list installs them"
    return other_kernel_reason(header, kernel)


def _replaced_by_rebuilt(
    headers: dict[str, PackageHeader], kept: list[str], kernel: str, rebuilt: frozenset[str]
) -> dict[str, str]:
    """Rule 3: the repository's packages whose name and arch a package built for ``kernel`` also has."""
    made: dict[tuple[str, str], PackageHeader] = {}
    for key in kept:
        header = headers[key]
        if key in rebuilt or is_for(header, kernel):
            made.setdefault((header.name, header.arch), header)
    replaced = {}
    for key in kept:
        header = headers[key]
        stands_in = made.get((header.name, header.arch))
        if stands_in is not None and stands_in is not header and key not in rebuilt and not is_for(header, kernel):
            replaced[key] = f"replaced by {stands_in.nevra}, built for {kernel}"
    return replaced


def choose(headers: dict[str, PackageHeader], kernel: str, rebuilt: frozenset[str] = frozenset()) -> Selection:
    """Decide what the version of ``kernel`` publishes from ``headers`` (keyed by the package's path);
    ``rebuilt``: the keys of packages the rebuild tool made for ``kernel``."""
    left: dict[str, str] = {}
    seen: dict[tuple[str, str, str], str] = {}
    for key in sorted(headers):
        header = headers[key]
        reason = _not_published_reason(header, kernel)
        identity = (header.name, header.evr, header.arch)
        if reason:
            left[key] = reason
        elif identity in seen:
            left[key] = f"the same package as {seen[identity]}"
        else:
            seen[identity] = key
    left |= _replaced_by_rebuilt(headers, [key for key in sorted(headers) if key not in left], kernel, rebuilt)
    changed = True
    while changed:
        changed = False
        kept = [key for key in sorted(headers) if key not in left]
        provided_by_kept = _Provides(headers[key] for key in kept)
        provided_by_gone = _Provides(headers[key] for key in left)
        for key in kept:
            header = headers[key]
            if is_metapackage(header):
                continue
            for requirement in filter(_matters, header.requires):
                if provided_by_kept(requirement):
                    continue
                providers = provided_by_gone(requirement)
                if providers:
                    left[key] = f"requires {requirement}, which only {providers[0].nevra} provides"
                    changed = True
                    break
    kept_headers = [headers[key] for key in sorted(headers) if key not in left]
    gone = [headers[key] for key in sorted(left)]
    rewrites = []
    for key in sorted(headers):
        if key not in left and is_metapackage(headers[key]):
            rewrite = _rewrite(key, headers[key], kept_headers, gone, kernel)
            if rewrite:
                rewrites.append(rewrite)
    rewritten = {rewrite.key for rewrite in rewrites}
    return Selection(
        kernel=kernel,
        kept=tuple(key for key in sorted(headers) if key not in left and key not in rewritten),
        left_out=tuple(LeftOut(key, headers[key].nevra, left[key]) for key in sorted(left)),
        rewrites=tuple(rewrites),
    )


def infer_kernel(headers: dict[str, PackageHeader], requested: str | None) -> str:
    """The kernel a bundle holds modules for: the requested one (which must be there), the only one, or
    the only one it was rebuilt for (``.kver.<K>``) when it also holds the GA kernel's ``kmod-*``."""
    found: dict[str, list[str]] = {}
    for key, header in sorted(headers.items()):
        for kernel in module_kernels(header.files):
            found.setdefault(kernel, []).append(key)
    if requested is not None:
        kernel = parse_kernel_release(requested).text
        if kernel not in found:
            built = ", ".join(sorted(found)) or "no kernel"
            raise InvalidInput(f"the bundle's kernel modules are built for {built}, not {kernel}")
        return kernel
    if not found:
        raise InvalidInput("no package in RPMS/ installs kernel modules; pass the kernel explicitly (--kernel)")
    candidates = sorted(found)
    if len(candidates) > 1:
        rebuilt = sorted(
            kernel
            for kernel in candidates
            if any(release_kernel_tag(headers[key]) == kver_tag(kernel) for key in found[kernel])
        )
        if len(rebuilt) != 1:
            raise InvalidInput(
                f"the bundle holds kernel modules for several kernels ({', '.join(candidates)}); "
                "pass the one to publish (--kernel)"
            )
        candidates = rebuilt
    return parse_kernel_release(candidates[0]).text
