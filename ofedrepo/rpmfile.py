"""Reading RPM package headers with librpm's Python bindings (no signature check, no database)."""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import rpm

from ofedrepo.errors import InvalidInput

# librpm writes each reason it refuses a package for to stderr ("error: x.rpm: signature hdr blob(4388): BAD"),
# around the one-line error ofedrepo gives for the same package (InvalidInput below): it says only what
# cannot be ignored.
rpm.setVerbosity(rpm.RPMLOG_CRIT)
# Headers are only read here; verifying signatures needs a keyring and is dnf's job on the client.
_READ_ONLY_FLAGS = rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS
_SIGNATURE_TAGS = ("RSAHEADER", "DSAHEADER", "SIGPGP", "SIGGPG")
_KEY_ID = re.compile(r"Key ID ([0-9a-f]{16})")
_MODULE_ROOTS = (PurePosixPath("/lib/modules"), PurePosixPath("/usr/lib/modules"))
_COMPARISONS = {0: "", 2: "<", 2 | 8: "<=", 8: "=", 4 | 8: ">=", 4: ">"}
_SENSE_MASK = 2 | 4 | 8  # RPMSENSE_LESS | RPMSENSE_GREATER | RPMSENSE_EQUAL


@dataclass(frozen=True)
class Dependency:
    """One ``Requires``/``Provides``/``Obsoletes``/``Conflicts`` entry: a name, maybe compared to an EVR."""

    name: str
    comparison: str = ""
    """``""`` (any version), ``<``, ``<=``, ``=``, ``>=`` or ``>``."""
    version: str = ""

    def __str__(self) -> str:
        return f"{self.name} {self.comparison} {self.version}" if self.comparison else self.name


@dataclass(frozen=True)
class PackageHeader:
    """The parts of an RPM header ofedrepo decides with."""

    name: str
    version: str
    release: str
    arch: str
    files: tuple[str, ...]
    signer: str | None
    """Key ID (16 lowercase hex digits) of the OpenPGP signature, None when the package is unsigned."""
    epoch: int | None = None
    requires: tuple[Dependency, ...] = ()
    provides: tuple[Dependency, ...] = ()
    obsoletes: tuple[Dependency, ...] = ()
    conflicts: tuple[Dependency, ...] = ()

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.evr}.{self.arch}"

    @property
    def evr(self) -> str:
        """``[epoch:]version-release``, as dependencies compare it."""
        prefix = f"{self.epoch}:" if self.epoch is not None else ""
        return f"{prefix}{self.version}-{self.release}"

    @property
    def module_kernels(self) -> frozenset[str]:
        """Kernel releases whose module tree (``/lib/modules/<K>/``) this package installs files into."""
        return module_kernels(self.files)


def module_kernels(files: tuple[str, ...] | list[str]) -> frozenset[str]:
    """The ``<K>`` of every ``/lib/modules/<K>/...`` (or ``/usr/lib/modules``) file below a kernel's tree."""
    kernels = set()
    for name in files:
        path = PurePosixPath(name)
        for root in _MODULE_ROOTS:
            if path.is_relative_to(root) and len(path.parts) > len(root.parts) + 1:
                kernels.add(path.parts[len(root.parts)])
    return frozenset(kernels)


def _signer(header: "rpm.hdr") -> str | None:
    for tag in _SIGNATURE_TAGS:
        match = _KEY_ID.search(header.sprintf(f"%{{{tag}:pgpsig}}"))
        if match:
            return match.group(1)
    return None


class Payload:
    """librpm's reader of a package's cpio payload (``for entry in payload``, ``payload.read(size)``), whose
    failures on a damaged or hostile payload (a bad cpio magic, a member the header does not list, a broken
    compressed stream) are ``InvalidInput`` naming the package, never librpm's own exceptions."""

    def __init__(self, path: Path, archive: Any) -> None:
        self.path = path
        self._archive = archive

    def _refused(self, error: Exception) -> InvalidInput:
        reason = str(error)[:200] or type(error).__name__
        return InvalidInput(f"{self.path.name}: its payload cannot be read ({reason})")

    def __iter__(self) -> Iterator[Any]:
        entries = iter(self._archive)
        while True:
            try:
                entry = next(entries)
            except StopIteration:
                return
            except (rpm.error, OSError, ValueError, TypeError) as error:
                raise self._refused(error) from None
            yield entry

    def read(self, size: int = -1) -> bytes:
        try:
            data: bytes = self._archive.read(size)
        except (rpm.error, OSError, ValueError, TypeError) as error:
            raise self._refused(error) from None
        return data


@contextmanager
def open_payload(path: Path) -> Iterator[tuple["rpm.hdr", Payload]]:
    """A package's header and a reader of its cpio payload; ``InvalidInput`` when either cannot be read."""
    transaction = rpm.TransactionSet("/", _READ_ONLY_FLAGS)
    try:
        descriptor = rpm.fd.open(str(path))
    except (rpm.error, OSError) as error:
        raise InvalidInput(f"{path.name}: cannot be opened ({error})") from None
    try:
        try:
            header = transaction.hdrFromFdno(descriptor)  # leaves the stream at the payload
            # rpm's own default when a package does not say how its payload is compressed
            compressor = header["payloadcompressor"] or "gzip"
            archive = rpm.files(header).archive(rpm.fd(descriptor, "r", flags=compressor))
        except (rpm.error, OSError, ValueError, TypeError) as error:
            raise InvalidInput(f"{path.name}: not a readable RPM package ({str(error)[:200]})") from None
        yield header, Payload(path, archive)
    finally:
        descriptor.close()


def _dependencies(header: "rpm.hdr", kind: str) -> tuple[Dependency, ...]:
    names = header[getattr(rpm, f"RPMTAG_{kind}NAME")] or []
    flags = header[getattr(rpm, f"RPMTAG_{kind}FLAGS")] or [0] * len(names)
    versions = header[getattr(rpm, f"RPMTAG_{kind}VERSION")] or [""] * len(names)
    return tuple(
        Dependency(name, _COMPARISONS.get(flag & _SENSE_MASK, ""), version if flag & _SENSE_MASK else "")
        for name, flag, version in zip(names, flags, versions, strict=False)
    )


def read_header(path: Path) -> PackageHeader:
    """Read ``path``'s header; ``InvalidInput`` if it is not an RPM package."""
    transaction = rpm.TransactionSet("/", _READ_ONLY_FLAGS)
    try:
        with path.open("rb") as handle:
            header = transaction.hdrFromFdno(handle.fileno())
    except rpm.error as error:
        raise InvalidInput(f"{path.name}: not a readable RPM package ({error})") from None
    if header.isSource():
        raise InvalidInput(f"{path.name}: is a source package; a yum repository of binaries cannot hold it")
    return PackageHeader(
        name=header[rpm.RPMTAG_NAME],
        version=header[rpm.RPMTAG_VERSION],
        release=header[rpm.RPMTAG_RELEASE],
        arch=header[rpm.RPMTAG_ARCH],
        files=tuple(header[rpm.RPMTAG_FILENAMES]),
        signer=_signer(header),
        epoch=header[rpm.RPMTAG_EPOCH],
        requires=_dependencies(header, "REQUIRE"),
        provides=_dependencies(header, "PROVIDE"),
        obsoletes=_dependencies(header, "OBSOLETE"),
        conflicts=_dependencies(header, "CONFLICT"),
    )
