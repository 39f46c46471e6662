"""MLNX_OFED: NVIDIA's bundles (``MLNX_OFED_LINUX-<ver>-<distro>-<arch>``) and ``mlnx_add_kernel_support.sh``.

A bundle is a directory (shipped as a tgz or an ISO) whose marker files say what it is (``.mlnx``, ``distro``,
``.arch``: ``ofedrepo.bundles.unpack``), with its packages in ``RPMS/`` and its own copy of the rebuild
script at the top. The script ([A] ``nnurlan008/mlnx_ofed_5.0-2.1.8``, ``mlnx_add_kernel_support.sh``)
rebuilds the kernel packages for ``-k <K>`` from ``-s <sources>`` and writes ``<t>/<name>-ext.tgz``, a
bundle of the same layout holding the rebuilt packages; it exits 30 ("Required kernel (<K>) is already
supported") when the bundle holds rebuilt packages for ``<K>`` already. That ``-ext`` bundle is also what
``ofedrepo publish`` takes from a rebuild done by hand.
"""

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ofedrepo.bundles.names import BundleIdentity
from ofedrepo.bundles.unpack import OpenedBundle, open_bundle
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
from ofedrepo.distro import names_distro
from ofedrepo.errors import BuildFailed, NotABundle
from ofedrepo.kinds import BundleKind
from ofedrepo.rpmfile import module_kernels, read_header
from ofedrepo.untrusted import ScratchDir, shown

SCRIPT = "mlnx_add_kernel_support.sh"
#: The script's answer when the bundle already holds rebuilt packages for the kernel ([A]: ``exit 30``).
ALREADY_SUPPORTED = 30
#: ``DIB_MLNX_OFED_PKGLIST`` in the seed article (what a version recorded without its package names gets).
SEED_PKGLIST = ("mlnx-ofed-hypervisor", "mlnx-fw-updater")
#: Installation groups a DIB package list names, in order of preference (an OpenStack hypervisor first).
PKGLIST_GROUPS = ("hypervisor", "hpc", "basic", "all", "kernel-only")
#: What installs the modules when a version has no metadata package at all.
MODULE_PACKAGES = ("mlnx-ofa_kernel-modules", "kmod-mlnx-ofa_kernel")
_GZIP_MAGIC = b"\x1f\x8b"
#: An ISO 9660 volume descriptor's identifier, at byte 32769.
_ISO_MAGIC_OFFSET, _ISO_MAGIC = 32769, b"CD001"


def add_kernel_support_argv(bundle: Path, kernel: str, sources: Path, tmpdir: Path, distro: str) -> list[str]:
    """NVIDIA's documented invocation: rebuild the bundle's kernel packages for ``kernel`` into a tgz.

    ``--distro`` because the script can only detect the distro from an rpm that owns ``/etc/issue``;
    ``--skip-repo`` because ofedrepo makes the repository (and the metadata packages) itself.
    """
    return [
        "bash", str(bundle / SCRIPT),
        "-m", str(bundle), "-k", kernel, "-s", str(sources),
        "--make-tgz", "-t", str(tmpdir), "-y", "--skip-repo", "--distro", distro,
    ]  # fmt: skip


def held_kernels(bundle: OpenedBundle) -> list[str]:
    """Kernels the bundle's packages install modules for: those need no rebuild (its GA kernel)."""
    kernels: set[str] = set()
    for relative in bundle.packages:
        kernels |= module_kernels(read_header(bundle.root / relative).files)
    return sorted(kernels)


def package_list(present: Collection[str]) -> list[str]:
    """An ``mlnx-ofed-<group>`` the version holds (the hypervisor set when there is one), or failing that its
    modules package, and ``mlnx-fw-updater``."""
    chosen = next((f"mlnx-ofed-{group}" for group in PKGLIST_GROUPS if f"mlnx-ofed-{group}" in present), None)
    chosen = chosen or next((name for name in MODULE_PACKAGES if name in present), None)
    return [name for name in (chosen, "mlnx-fw-updater") if name and name in present]


def _is_archive(source: Path) -> bool:
    try:
        with source.open("rb") as handle:
            if handle.read(2) == _GZIP_MAGIC:
                return True
            handle.seek(_ISO_MAGIC_OFFSET)
            return handle.read(len(_ISO_MAGIC)) == _ISO_MAGIC
    except OSError:
        return False


class MlnxOfed:
    """The ``Vendor`` of MLNX_OFED bundles."""

    kind = BundleKind.MLNX_OFED
    tool = SCRIPT

    def recognises(self, source: Path) -> bool:
        """A tgz or an ISO, or a directory with a ``.mlnx`` marker (at its top or in its one top directory)."""
        if source.is_file():
            return _is_archive(source)
        entries = list(source.iterdir()) if source.is_dir() else []
        top = entries[0] if len(entries) == 1 and entries[0].is_dir() else source
        return (source / ".mlnx").is_file() or (top / ".mlnx").is_file()

    recognises_output = recognises

    @contextmanager
    def register(
        self, source: Path, names: Sequence[str], workspace: Workspace, progress: Note | None
    ) -> Iterator[Registration]:
        with open_bundle(source, workspace.data, workspace.limits, workspace.libraries, names) as opened:
            if not (opened.root / SCRIPT).is_file():
                raise NotABundle(f"not an MLNX_OFED bundle: {SCRIPT} is missing")
            if progress:
                progress(f"Reading the packages of {opened.identity.name}")
            yield Registration(opened, held_kernels(opened), None, {})

    @contextmanager
    def open_stored(self, stored: StoredBundle, workspace: Workspace, note: Note) -> Iterator[OpenedBundle]:
        with open_bundle(stored.root, workspace.data, workspace.limits, workspace.libraries, [stored.name]) as opened:
            yield opened

    def confirm_names(self, identity: BundleIdentity, names: Sequence[str]) -> None:
        """Its marker files, not its names, say what a bundle is: the same content is the same bundle."""

    def fits_distro(self, bundle_distro: str, wanted: str) -> bool:
        """A bundle is built for one distro tag (``rhel8.6``) and serves images of that tag only, or kernels that
        name its major release alone (UEK's ``ol8``)."""
        return names_distro(wanted, bundle_distro)

    def tool_run(
        self, stored: StoredBundle, kernel: str, sources: Path, scratch: Path, workspace: Workspace
    ) -> ToolRun:
        output = scratch / "output"
        output.mkdir()
        command = add_kernel_support_argv(stored.root, kernel, sources, output, stored.identity.distro)
        return ToolRun(SCRIPT, command, [stored.root, sources], output, output, ok=(0, ALREADY_SUPPORTED))

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
        """The ``-ext.tgz`` the script wrote, opened; None after its "already supported" (exit 30)."""
        if ended.returncode == ALREADY_SUPPORTED:
            note(f"the script says {stored.name} already supports {kernel}: publishing its own packages")
            yield None
            return
        with ScratchDir(run.output) as made:
            names = made.names()
            produced = [name for name in names if name.endswith("-ext.tgz")]
            if len(produced) != 1:
                found = ", ".join(shown(name) for name in names[:20]) or "nothing"
                raise BuildFailed(f"expected one MLNX_OFED_LINUX-...-ext.tgz from the script, found {found}")
            note(f"script produced {shown(produced[0])}")
            tgz = made.collect(produced[0], scratch / COLLECTED, workspace.limits.max_bytes)
        with open_bundle(tgz, workspace.data, workspace.limits, workspace.libraries, [stored.name]) as rebuilt:
            if rebuilt.identity.name != stored.name:
                raise BuildFailed(f"the script produced {rebuilt.identity.name}, not a rebuild of {stored.name}")
            yield rebuilt

    @contextmanager
    def open_output(
        self,
        source: Path,
        kernel: str | None,
        registered: Callable[[BundleKind], list[StoredBundle]],
        workspace: Workspace,
        note: Note,
    ) -> Iterator[OpenedOutput]:
        """An ``-ext`` bundle holds everything a version needs: no registered bundle is asked for."""
        with open_bundle(source, workspace.data, workspace.limits, workspace.libraries) as opened:
            yield OpenedOutput(opened, kernel)

    def dib_packages(self, present: Collection[str]) -> list[str]:
        return package_list(present)
