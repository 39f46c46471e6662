"""What every vendor's module answers: the one interface between ofedrepo and a vendor's files and tools.

A vendor is a way NVIDIA ships the OFED driver with a tool that rebuilds its kernel packages for another
kernel: MLNX_OFED bundles and ``mlnx_add_kernel_support.sh`` (``ofedrepo.bundles.mlnx_ofed``), DOCA-OFED
repositories and ``doca-kernel-support`` (``ofedrepo.bundles.doca``). Registration, requests, the build
pipeline and publishing ask the vendor of a bundle (``ofedrepo.bundles.vendors``) and never which vendor it
is: a third one would be one more module.

A build is the same for every vendor::

    StoredBundle (its row) ─tool_run─> ToolRun ─the worker runs it, confined─> ToolEnded ─collect─> the package
    set for the kernel (OpenedBundle) ─> the publisher
"""

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ofedrepo.bundles.archive import Limits
from ofedrepo.bundles.names import BundleIdentity
from ofedrepo.bundles.unpack import Libraries, OpenedBundle
from ofedrepo.kinds import BundleKind
from ofedrepo.storage import DataDir

Note = Callable[[str], None]
#: Where a build links the files it takes from the tool's output, once the tool has ended (``ScratchDir.collect``).
COLLECTED = "collected"


@dataclass(frozen=True)
class Workspace:
    """Where a vendor's module may unpack (the data dir's ``work/``) and the limits every archive is read with."""

    data: DataDir
    limits: Limits
    libraries: Libraries
    """Which library set of a split MLNX_OFED bundle to take (``OFEDREPO_BUNDLE_LIBRARIES``)."""


@dataclass(frozen=True)
class Registration:
    """A new input, identified and opened once, with what its row stores."""

    opened: OpenedBundle
    supported_kernels: list[str]
    """Kernels it already holds modules for: published without a rebuild."""
    tool_sha256: str | None
    """The rebuild tool's checksum when the tool is versioned apart from the bundle (a build's cache key)."""
    facts: dict[str, Any]
    """What its builds need later (``StoredBundle.facts``), JSON."""


@dataclass(frozen=True)
class StoredBundle:
    """A registered bundle as its builds see it: its row and its stored tree, never its packages read again."""

    identity: BundleIdentity
    root: Path
    facts: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.identity.name


@dataclass(frozen=True)
class ToolRun:
    """One run of a vendor's rebuild tool, as the worker's runner confines and runs it."""

    name: str
    """The tool's own name: what the build log calls its output."""
    command: list[str]
    inputs: list[Path]
    """Read-only inputs, mounted at their own paths."""
    logs: Path
    """Where the tool's own log files grow (streamed into the build log as they do)."""
    output: Path
    """Where what it makes is (``collect`` reads it only through ``ofedrepo.untrusted.ScratchDir``)."""
    ok: tuple[int, ...] = (0,)
    """Exit statuses that are not failures."""
    placed: list[tuple[Path, str]] = field(default_factory=list)
    """More read-only inputs, each mounted at a path of its own (a tool that finds itself by absolute path)."""
    tmp: Path | None = None
    """A directory of the scratch mounted as the tool's ``/tmp`` (a tool that builds under ``/tmp``)."""
    signing_switch: dict[str, str] = field(default_factory=dict)
    """Variables besides the two key paths that turn module signing on."""
    watch: re.Pattern[bytes] | None = None
    """A line of its output worth remembering (``ToolEnded.seen``): what says where its results are."""


@dataclass(frozen=True)
class ToolEnded:
    """How a run ended, when it ended with one of ``ToolRun.ok``."""

    returncode: int
    seen: list[str]
    """The first group of each output line ``ToolRun.watch`` matched, in order."""


@dataclass(frozen=True)
class OpenedOutput:
    """A rebuild tool's output made elsewhere (``ofedrepo publish``), opened."""

    bundle: OpenedBundle
    kernel: str | None
    """The kernel it was built for, where the output itself says (DOCA's wrapper does; an ``-ext`` bundle holding
    the GA kernel's modules too may not)."""


class Vendor(Protocol):
    """One vendor's files and rebuild tool (see the module's docstring)."""

    kind: BundleKind
    tool: str
    """The rebuild tool's name, as its vendor writes it."""

    def recognises(self, source: Path) -> bool:
        """Whether ``source`` (a file or directory as it arrived) is this vendor's input, by its content."""
        ...

    def register(
        self, source: Path, names: Sequence[str], workspace: Workspace, progress: Note | None
    ) -> AbstractContextManager[Registration]:
        """Identify and open a new input; ``names`` are what it arrived as (file name, imported path)."""
        ...

    def confirm_names(self, identity: BundleIdentity, names: Sequence[str]) -> None:
        """Refuse (``NotABundle``) when ``names`` (what an input already registered under ``identity`` arrived as
        this time) say it is something else: registering the same content again must not bypass identification."""
        ...

    def open_stored(
        self, stored: StoredBundle, workspace: Workspace, note: Note
    ) -> AbstractContextManager[OpenedBundle]:
        """The package set a stored bundle offers, from its row's facts."""
        ...

    def fits_distro(self, bundle_distro: str, wanted: str) -> bool:
        """Whether a bundle made for ``bundle_distro`` serves images of the distro tag ``wanted``."""
        ...

    def tool_run(
        self, stored: StoredBundle, kernel: str, sources: Path, scratch: Path, workspace: Workspace
    ) -> ToolRun:
        """The rebuild of ``stored`` for ``kernel`` from its sources, working in ``scratch``."""
        ...

    def collect(
        self,
        stored: StoredBundle,
        kernel: str,
        run: ToolRun,
        ended: ToolEnded,
        scratch: Path,
        workspace: Workspace,
        note: Note,
    ) -> AbstractContextManager[OpenedBundle | None]:
        """The package set the run made for ``kernel``; None when the tool said the bundle already supports it
        (its own packages are published)."""
        ...

    def recognises_output(self, source: Path) -> bool:
        """Whether ``source`` is what this vendor's tool makes (``ofedrepo publish`` of a build done elsewhere)."""
        ...

    def open_output(
        self,
        source: Path,
        kernel: str | None,
        registered: Callable[[BundleKind], list[StoredBundle]],
        workspace: Workspace,
        note: Note,
    ) -> AbstractContextManager[OpenedOutput]:
        """The package set of a tool's output made elsewhere; ``registered`` finds the stored bundle it was
        built from, for a vendor whose output holds only the kernel's packages."""
        ...

    def dib_packages(self, present: Collection[str]) -> list[str]:
        """``DIB_MLNX_OFED_PKGLIST`` for a version holding the packages named ``present``."""
        ...
