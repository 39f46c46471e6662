"""The one safe extractor: every archive the service opens (bundles as tar or ISO 9660, and the cpio payloads of
RPM packages: DOCA's local-repo package, its tools and wrapper, distro kernel-devel packages).

Archives come from users, vendors and mirrors and are hostile until proven otherwise. Every member name is
checked before anything is written: no absolute paths, no ``..``, no NUL, no device files or FIFOs. Files are
streamed to disk in chunks (never a whole member in memory), counted as written against limits on the number
of members, the unpacked size and the ratio to the archive's own size (archive bombs). Symbolic and hard links
are created last, after every file, so no file is ever written through a link; then each link is judged by
where it resolves, through the other links, never by its text: one that leaves the destination is refused or,
where the archive's links outside are expected and unneeded (kernel-devel), removed. Modes lose
setuid/setgid/sticky bits and everything written is owned by the service.
"""

import errno
import gzip
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

import pycdlib
from pycdlib.dr import DirectoryRecord

if TYPE_CHECKING:
    from ofedrepo.config import Settings

from ofedrepo.errors import InvalidInput, OfedrepoError, UnsafeArchive
from ofedrepo.rpmfile import open_payload
from ofedrepo.storage import MAX_TREE_DEPTH, remove_tree

_CHUNK = 1024 * 1024


class Readable(Protocol):
    """A member's bytes: a tar member, an ISO file, an RPM payload's current entry."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Limits:
    """How big an archive may unpack: total bytes and number of members."""

    max_bytes: int
    max_members: int

    @classmethod
    def of(cls, settings: "Settings") -> "Limits":
        return cls(max_bytes=settings.archive_max_bytes, max_members=settings.archive_max_members)


#: What an extraction does with a link that resolves outside its destination: ``refuse`` the archive, or
#: ``drop`` the link (a kernel-devel tree's links into the installed system are not needed to build against it).
LinksOutside = Literal["refuse", "drop"]


@dataclass
class Extraction:
    """Writes validated members below ``root`` and defers links until every regular file exists."""

    root: Path
    limits: Limits
    links_outside: LinksOutside = "refuse"
    members: int = 0
    written: int = 0
    symlinks: list[tuple[str, str]] = field(default_factory=list)
    hardlinks: list[tuple[str, str]] = field(default_factory=list)

    def count(self, name: str) -> str:
        self.members += 1
        if self.members > self.limits.max_members:
            raise UnsafeArchive(f"archive has more than {self.limits.max_members} members")
        return safe_member_name(name)

    def directory(self, name: str) -> None:
        relative = self.count(name)
        if relative:
            _made(relative, lambda: (self.root / relative).mkdir(parents=True, exist_ok=True))

    def regular(self, name: str, size: int, mode: int, stream: "Readable") -> None:
        relative = self.count(name)
        if not relative:
            raise UnsafeArchive("archive member with an empty name")
        if self.written + size > self.limits.max_bytes:
            raise UnsafeArchive(f"archive unpacks to more than {self.limits.max_bytes} bytes")
        target = self.root / relative
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)

        def make() -> int:
            target.parent.mkdir(parents=True, exist_ok=True)
            return os.open(target, flags, 0o755 if mode & 0o111 else 0o644)

        descriptor = _made(relative, make)
        remaining = size
        with os.fdopen(descriptor, "wb") as output:
            while remaining > 0:
                chunk = stream.read(min(_CHUNK, remaining))
                if not chunk:
                    raise UnsafeArchive(f"archive member {relative!r} is truncated")
                output.write(chunk)
                remaining -= len(chunk)
        self.written += size

    def symlink(self, name: str, target: str) -> None:
        relative = self.count(name)
        if not target or "\x00" in target:
            raise UnsafeArchive(f"link {relative!r} has no usable target")
        self.symlinks.append((relative, target))

    def hardlink(self, name: str, target: str) -> None:
        self.hardlinks.append((self.count(name), safe_member_name(target)))

    def _parent_without_links(self, relative: str) -> Path:
        """The member's directory, made if needed; refused when reaching it would go through a link (an
        earlier member) instead of real directories below the destination."""
        parent = self.root
        for part in relative.split("/")[:-1]:
            parent = parent / part
            if parent.is_symlink():
                raise UnsafeArchive(f"archive member {relative!r} would be made through the link {part!r}")
            _made(relative, partial(parent.mkdir, exist_ok=True))
        return parent

    def finish(self) -> None:
        for relative, target in self.hardlinks:
            source = self.root / target
            if source.is_symlink() or not source.is_file() or not is_regular_inside(source, self.root):
                raise UnsafeArchive(f"hard link {relative!r} points to {target!r}, not a regular file")
            size = source.stat().st_size  # a copy: written, so counted like any member (a bomb of hard links)
            if self.written + size > self.limits.max_bytes:
                raise UnsafeArchive(f"archive unpacks to more than {self.limits.max_bytes} bytes")
            destination = self._parent_without_links(relative) / relative.rsplit("/", 1)[-1]
            _made(relative, partial(shutil.copyfile, source, destination, follow_symlinks=False))
            self.written += size
        for relative, target in self.symlinks:
            link = self._parent_without_links(relative) / relative.rsplit("/", 1)[-1]
            _made(relative, partial(link.symlink_to, target))
        self._links_resolve_inside()

    def _links_resolve_inside(self) -> None:
        """Each link, followed through the others as the kernel would, must end inside the destination; a link
        dropped may strand others that went through it, so dropping goes on until none is left outside."""
        real_root = os.path.realpath(self.root)
        remaining = list(self.symlinks)
        while remaining:
            outside = []
            for relative, target in remaining:
                real = _resolved(self.root / relative)
                if real is None or (real != real_root and not real.startswith(real_root + os.sep)):
                    outside.append((relative, target))
            if not outside:
                return
            if self.links_outside == "refuse":
                relative, target = outside[0]
                raise UnsafeArchive(f"link {relative!r} points outside the archive ({target[:120]!r})")
            for relative, _ in outside:
                (self.root / relative).unlink()
            remaining = [link for link in remaining if link not in outside]


def safe_member_name(name: str) -> str:
    """Normalise an archive member name to a relative path, or raise ``UnsafeArchive``."""
    shown = name[:120].encode("unicode_escape").decode("ascii")
    if "\x00" in name or "\\" in name:
        raise UnsafeArchive(f"archive member {shown!r} has a forbidden character")
    if name.startswith("/"):
        raise UnsafeArchive(f"archive member {shown!r} is an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"archive member {shown!r} climbs out with '..'")
    if len(parts) > MAX_TREE_DEPTH or any(len(os.fsencode(part)) > _MAX_NAME_BYTES for part in parts):
        raise UnsafeArchive(f"archive member {shown!r} is deeper or longer than a filesystem takes")
    if len(os.fsencode("/".join(parts))) > _MAX_PATH_BYTES:
        raise UnsafeArchive(f"archive member {shown!r} has too long a path")
    return "/".join(parts)


_T = TypeVar("_T")
#: A file name's longest component, and the longest path below the destination (``PATH_MAX`` leaves room for
#: the destination's own path).
_MAX_NAME_BYTES = 255
_MAX_PATH_BYTES = 3072


def _made(relative: str, make: "Callable[[], _T]") -> "_T":
    """``make`` the member; a name that an earlier member already took (``x`` then ``x/y``, or twice) is the
    archive's fault, said so, never an ``OSError`` that would reach a client as a 500."""
    try:
        return make()
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise UnsafeArchive(f"archive member {relative!r} appears twice, or inside a file") from None
    except OSError as error:
        if error.errno in (errno.ENAMETOOLONG, errno.ELOOP):
            raise UnsafeArchive(f"archive member {relative!r} cannot be made ({error.strerror})") from None
        raise


def _resolved(link: Path) -> str | None:
    """Where ``link`` leads, followed by the kernel itself through every other link (never by recursion of
    ours, which thousands of chained links exhaust); None when the chain loops or is too long. A link to
    nothing yet leads where the kernel takes the longest part of its target that exists (links and ``..`` in it
    followed as the kernel follows them, never read as text: ``d/..`` is not ``.`` when ``d`` is a link), then
    the missing rest; a rest that climbs (``..`` below a name that does not exist yet) is judged nowhere."""
    try:
        return _where_kernel_leads(str(link))
    except FileNotFoundError:
        return _resolved_dangling(link)
    except OSError:
        return None


def _where_kernel_leads(path: str) -> str:
    """The real path of ``path``, as the kernel resolves it (every link and ``..`` followed by the kernel)."""
    descriptor = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        return os.readlink(f"/proc/self/fd/{descriptor}")
    finally:
        os.close(descriptor)


def _resolved_dangling(link: Path) -> str | None:
    target = os.readlink(link)
    base = _resolved(link.parent)
    if base is None:
        return None
    parts = (target if target.startswith("/") else os.path.join(base, target)).split("/")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            existing = _where_kernel_leads("/".join(parts[:cut]) or "/")
        except FileNotFoundError:
            continue
        except OSError:
            return None
        rest = [part for part in parts[cut:] if part not in ("", ".")]
        return None if ".." in rest else os.path.join(existing, *rest)
    return None


#: Bundles are mostly RPMs, compressed already: their archives unpack to about their own size. An archive
#: that claims far more than this many times its size is a bomb, refused as it is written, long before the
#: absolute limit (a 121-byte tgz can claim gigabytes).
MAX_EXPANSION = 50
#: Below this, the ratio is not applied (small archives of small files compress well).
EXPANSION_FLOOR = 64 * 1024 * 1024


def extract(
    archive: Path, destination: Path, limits: Limits, accept: Callable[[list[str]], None] | None = None
) -> None:
    """Unpack ``archive`` (tar[.gz|.bz2|.xz] or ISO 9660) into ``destination``, which must not exist.

    Before a byte is written, a survey of the members' headers checks their number and declared sizes, and
    ``accept`` (given every member's name) may refuse what the archive is: an archive bomb or something
    that is not a bundle costs one read, never the disk. On any refusal the partial output is removed and
    ``UnsafeArchive`` (or ``InvalidInput`` for a file that is neither format) is raised.
    """
    budget = max(EXPANSION_FLOOR, MAX_EXPANSION * archive.stat().st_size)
    limits = Limits(max_bytes=min(limits.max_bytes, budget), max_members=limits.max_members)
    names = survey(archive, limits)
    if accept:
        accept(names)
    destination.mkdir(parents=True)
    extraction = Extraction(root=destination, limits=limits)
    try:
        if _is_iso(archive):
            _extract_iso(archive, extraction)
        else:
            _extract_tar(archive, extraction)
        extraction.finish()
    except BaseException:
        remove_tree(destination)
        raise


def extract_payload(
    package: Path,
    destination: Path,
    limits: Limits,
    select: Callable[[str], str | None],
    links: Literal["refuse", "skip", "inside"] = "refuse",
) -> int:
    """Write the members of ``package``'s cpio payload that ``select`` maps to a relative path into
    ``destination`` (made if missing; no file is written twice), checked as archive members are (names, sizes,
    counts, 50x expansion), streamed; return how many files were written. Links: ``refuse`` any, ``skip`` them
    (nothing selected needs one), or keep those that resolve ``inside`` the destination (kernel-devel)."""
    budget = max(EXPANSION_FLOOR, MAX_EXPANSION * package.stat().st_size)
    limits = Limits(min(limits.max_bytes, budget), limits.max_members)
    extraction = Extraction(destination, limits, links_outside="drop")
    destination.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with open_payload(package) as (_, payload):
            for entry in payload:
                relative = select(entry.name)
                if relative is None:
                    continue
                if stat.S_ISDIR(entry.mode):
                    extraction.directory(relative)
                elif stat.S_ISREG(entry.mode):
                    extraction.regular(relative, entry.size, entry.mode, payload)
                    written += 1
                elif stat.S_ISLNK(entry.mode) and links == "inside":
                    extraction.symlink(relative, entry.linkto)
                elif not (stat.S_ISLNK(entry.mode) and links == "skip"):
                    raise UnsafeArchive(f"{package.name}: {entry.name[:120]!r} is not a regular file or directory")
        extraction.finish()
    except BaseException:
        remove_tree(destination)
        raise
    return written


def survey(archive: Path, limits: Limits) -> list[str]:
    """The archive's member names (normalised), read from headers alone; refused past ``limits``."""
    names: list[str] = []
    declared = 0

    def member(name: str, size: int) -> None:
        nonlocal declared
        names.append(safe_member_name(name))
        declared += size
        if len(names) > limits.max_members:
            raise UnsafeArchive(f"archive has more than {limits.max_members} members")
        if declared > limits.max_bytes:
            raise UnsafeArchive(f"archive unpacks to more than {limits.max_bytes} bytes")

    if _is_iso(archive):
        with _opened_iso(archive) as iso:
            for path, _, size in _iso_entries(iso):
                member(path, size)
    else:
        sizes: dict[str, int] = {}
        with _opened_tar(archive) as tar:
            for entry in tar:
                if entry.isreg():
                    sizes[safe_member_name(entry.name)] = entry.size
                # a hard link unpacks to a copy of its target: as large as the target
                linked = sizes.get(safe_member_name(entry.linkname), 0) if entry.islnk() else 0
                member(entry.name, entry.size if entry.isreg() else linked)
    return names


@contextmanager
def _opened_tar(archive: Path) -> Iterator[tarfile.TarFile]:
    """The tar in stream mode ("r|*": read once, front to back); a damaged one is ``InvalidInput``."""
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            yield tar
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, lzma.LZMAError, zlib.error) as error:
        raise InvalidInput(f"{archive.name}: not a readable tar or ISO archive ({error})") from None


def _extract_tar(archive: Path, extraction: Extraction) -> None:
    with _opened_tar(archive) as tar:
        for member in tar:
            _tar_member(tar, member, extraction)


def _tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, extraction: Extraction) -> None:
    if member.isdir():
        extraction.directory(member.name)
    elif member.isreg():
        stream = tar.extractfile(member)
        assert stream is not None
        extraction.regular(member.name, member.size, member.mode, stream)
    elif member.issym():
        extraction.symlink(member.name, member.linkname)
    elif member.islnk():
        extraction.hardlink(member.name, member.linkname)
    else:
        kind = "device" if member.ischr() or member.isblk() else "special file"
        raise UnsafeArchive(f"archive member {safe_member_name(member.name)!r} is a {kind}")


def _is_iso(archive: Path) -> bool:
    """ISO 9660 images carry ``CD001`` at byte 32769 (the primary volume descriptor)."""
    with archive.open("rb") as handle:
        handle.seek(32769)
        return handle.read(5) == b"CD001"


@contextmanager
def _opened_iso(archive: Path) -> Iterator[pycdlib.PyCdlib]:
    """The ISO, open; a damaged one is ``InvalidInput``, one with names that are not UTF-8 ``UnsafeArchive``."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(archive))
    except Exception as error:  # a pure-Python parser of hostile bytes: KeyError, IndexError, struct.error...
        raise InvalidInput(f"{archive.name}: unreadable ISO image ({type(error).__name__}: {error})") from None
    try:
        yield iso
    except (OfedrepoError, OSError):  # ours (a refused member, a full disk): as they are
        raise
    except UnicodeError:
        raise UnsafeArchive(f"{archive.name}: an ISO file name is not UTF-8") from None
    except Exception as error:  # pycdlib's, reading records the image describes: the image's fault
        raise InvalidInput(f"{archive.name}: unreadable ISO image ({type(error).__name__}: {error})") from None
    finally:
        iso.close()


def _extract_iso(archive: Path, extraction: Extraction) -> None:
    with _opened_iso(archive) as iso:
        for path, kind, size in _iso_entries(iso):
            if kind == "dir":
                extraction.directory(path)
            elif kind == "symlink":
                extraction.symlink(path, _iso_symlink_target(iso, path))
            else:
                with iso.open_file_from_iso(**_iso_key(iso, path)) as stream:
                    extraction.regular(path, size, 0o644, stream)


def _iso_key(iso: pycdlib.PyCdlib, path: str) -> dict[str, str]:
    """Rock Ridge names are the real ones; Joliet next; plain ISO 9660 names are a last resort."""
    if iso.has_rock_ridge():
        return {"rr_path": "/" + path}
    if iso.has_joliet():
        return {"joliet_path": "/" + path}
    return {"iso_path": "/" + path}


def _iso_entries(iso: pycdlib.PyCdlib) -> Iterator[tuple[str, str, int]]:
    key = next(iter(_iso_key(iso, "")))
    for directory, dirnames, filenames in iso.walk(**{key: "/"}):
        base = directory.strip("/")
        for name in dirnames:
            yield posixpath.join(base, name), "dir", 0
        for name in filenames:
            path = posixpath.join(base, name)
            record = iso.get_record(**{key: "/" + path})
            assert isinstance(record, DirectoryRecord)
            if key == "iso_path":
                path = path.rsplit(";", 1)[0]
            if key == "rr_path" and record.rock_ridge is not None and record.rock_ridge.is_symlink():
                yield path, "symlink", 0
            else:
                yield path, "file", record.get_data_length()


def _iso_symlink_target(iso: pycdlib.PyCdlib, path: str) -> str:
    record = iso.get_record(rr_path="/" + path)
    assert isinstance(record, DirectoryRecord) and record.rock_ridge is not None
    target = record.rock_ridge.symlink_path()  # bytes, as Rock Ridge stores them
    try:
        return target.decode() if isinstance(target, bytes) else str(target)
    except UnicodeDecodeError:
        raise UnsafeArchive(f"link {safe_member_name(path)!r} has a target that is not UTF-8") from None


def is_regular_inside(path: Path, root: Path) -> bool:
    """True when ``path`` is a regular file whose real location is inside ``root`` (symlinks resolved)."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real.is_relative_to(root.resolve()) and stat.S_ISREG(real.stat().st_mode)
