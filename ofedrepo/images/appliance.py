"""The libguestfs appliance: boots once for several images, read-only, and reads what inspection needs.

Images are never mounted on the host: libguestfs runs a small VM that mounts them, and every path below
is resolved inside that VM, so a symlink in the image (``/lib -> usr/lib``, or ``-> /etc/shadow``) points
into the image, never at the host. What comes back is names and small texts, capped in size, that
``ofedrepo.images.facts`` interprets. The only host files written are the copy of the image's rpm database,
in a scratch directory of the data dir, which the host's ``rpm`` reads (libguestfs' own application
listing needs an rpm of the image's vintage and fails on Debian hosts).

KVM is tried first; when the launch fails (a broken or crashing KVM) or hangs (a guest spinning at full CPU
and never answering, killed after ``KVM_LAUNCH_DEADLINE`` seconds), the appliance is relaunched with TCG
software emulation and the fallback is logged. The verdict is kept for a day in ``~/.cache/ofedrepo/``, so
that other processes on the host (every ``ofedrepo inspect``) go straight to TCG instead of paying for the
same failure again, and say why.
"""

import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import guestfs

from ofedrepo.errors import ApplianceFailed, InvalidInput, ToolFailed
from ofedrepo.images.bootloader import BootConfig
from ofedrepo.images.facts import OS_RELEASE, RELEASE_FILES, GuestFacts
from ofedrepo.images.probe import ProbedImage
from ofedrepo.process import clean_environment, run

log = logging.getLogger(__name__)

MAX_TEXT = 256 * 1024
MAX_NAMES = 4096
MAX_BLS_ENTRIES = 256
MAX_RPMDB_BYTES = 1024 * 1024 * 1024
RPM_DIRECTORIES = ("/var/lib/rpm", "/usr/lib/sysimage/rpm")
GRUB_DIRECTORIES = ("/boot/grub2", "/boot/grub")

#: A KVM appliance is up in seconds; one still not up after this long is taken for a hung KVM.
KVM_LAUNCH_DEADLINE = 60.0
#: How long a host's failed KVM is remembered (a kernel or firmware update may mend it).
KVM_VERDICT_SECONDS = 24 * 3600

_state = {"kvm_failed": False}
_kvm_launch = threading.Lock()


def uses_tcg(handle: guestfs.GuestFS) -> bool:
    return "force_tcg" in handle.get_backend_settings()


def kvm_verdict_file() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ofedrepo" / "kvm-unusable"


def _kvm_known_unusable() -> str | None:
    """Why KVM failed on this host recently (this process or another), or None."""
    if _state["kvm_failed"]:
        return "it failed earlier in this process"
    verdict = kvm_verdict_file()
    try:
        if time.time() - verdict.stat().st_mtime < KVM_VERDICT_SECONDS:
            return f"{verdict.read_text(errors='replace').strip()[:300]} (recorded in {verdict})"
    except OSError:
        pass
    return None


def _remember_kvm_unusable(reason: str) -> None:
    _state["kvm_failed"] = True
    verdict = kvm_verdict_file()
    try:
        verdict.parent.mkdir(parents=True, exist_ok=True)
        partial = verdict.with_name(f".{verdict.name}.{os.getpid()}")
        partial.write_text(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {reason}\n")
        partial.replace(verdict)
    except OSError as error:  # only a cache: this process still remembers
        log.debug("could not record the KVM verdict in %s: %s", verdict, error)


def _qemu_children() -> set[int]:
    """This process's qemu children (libguestfs' direct backend starts qemu as a child of its caller)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)
            comm = fields[0].split("(", 1)[1]
            parent = int(fields[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and comm.startswith("qemu"):
            found.add(int(entry.name))
    return found


def _launch_with_deadline(handle: guestfs.GuestFS, deadline: float) -> None:
    """``handle.launch()``, but a launch that hangs is ended by killing its qemu: launch then fails, as for a
    KVM that crashes. KVM launches take turns, so the qemu started meanwhile is this launch's own."""
    with _kvm_launch:
        before = _qemu_children()
        failure: list[BaseException] = []

        def launch() -> None:
            try:
                handle.launch()
            except BaseException as error:  # handed to the waiting thread
                failure.append(error)

        thread = threading.Thread(target=launch, name="appliance-launch", daemon=True)
        thread.start()
        thread.join(deadline)
        if thread.is_alive():
            for pid in _qemu_children() - before:
                os.kill(pid, signal.SIGKILL)
            thread.join(60)
            raise RuntimeError(f"the appliance was not up after {deadline:.0f} s (qemu killed)")
        if failure:
            raise failure[0]


def _new_handle(images: Sequence[ProbedImage], force_tcg: bool) -> guestfs.GuestFS:
    handle = guestfs.GuestFS(python_return_dict=True, close_on_exit=False)
    if force_tcg and not uses_tcg(handle):
        handle.set_backend_settings([*handle.get_backend_settings(), "force_tcg"])
    for image in images:
        # The format is always explicit: never let qemu guess (a raw file could pose as qcow2 with a backing file).
        handle.add_drive_opts(str(image.path), readonly=True, format=image.format)
    return handle


@contextmanager
def launched(images: Sequence[ProbedImage]) -> Iterator[guestfs.GuestFS]:
    """A running appliance with ``images`` attached read-only as /dev/sda, /dev/sdb..., in order."""
    started = time.monotonic()
    unusable = _kvm_known_unusable()
    handle = _new_handle(images, force_tcg=unusable is not None)
    if unusable is not None and not _state["kvm_failed"]:
        log.warning("KVM did not work on this host: %s; using TCG software emulation, which is slower", unusable)
        _state["kvm_failed"] = True
    try:
        if uses_tcg(handle):
            handle.launch()
        else:
            _launch_with_deadline(handle, KVM_LAUNCH_DEADLINE)
    except RuntimeError as error:
        already_tcg = uses_tcg(handle)
        handle.close()
        if already_tcg:
            raise ApplianceFailed(f"libguestfs could not start its appliance: {_first_line(error)}") from None
        log.warning(
            "libguestfs could not launch with KVM (%s); retrying with TCG software emulation, which is slower",
            _first_line(error),
        )
        _remember_kvm_unusable(f"libguestfs could not launch with KVM: {_first_line(error)}")
        handle = _new_handle(images, force_tcg=True)
        try:
            handle.launch()
        except RuntimeError as retry_error:
            handle.close()
            raise ApplianceFailed(f"libguestfs could not start its appliance: {_first_line(retry_error)}") from None
    log.info(
        "appliance up in %.1f s (%s) for %d image(s)",
        time.monotonic() - started,
        "TCG" if uses_tcg(handle) else "KVM",
        len(images),
    )
    try:
        yield handle
    finally:
        try:
            handle.shutdown()
        finally:
            handle.close()


def inspect_images(images: Sequence[ProbedImage], names: Sequence[str], scratch: Path, home: Path) -> list[Any]:
    """``GuestFacts`` for each image, or the ``InvalidInput`` saying why not, from one appliance launch.

    With several images, each operating system found is matched to its image by the disks its filesystems
    live on. An image that cannot be matched unambiguously (two images sharing a /boot UUID or an LVM volume
    group name) is inspected again on its own.
    """
    results: dict[int, Any] = {}
    alone: list[int] = []
    with launched(images) as handle:
        try:
            roots = handle.inspect_os()
        except RuntimeError as error:
            raise ApplianceFailed(f"libguestfs inspection failed: {_first_line(error)}") from None
        by_drive = {0: list(roots)} if len(images) == 1 else _roots_by_drive(handle, roots)
        for index, name in enumerate(names):
            found = by_drive.get(index, [])
            if len(found) == 1:
                results[index] = _facts_or_error(handle, found[0], name, scratch, home)
            elif len(images) > 1:
                alone.append(index)
            elif not found:
                results[index] = InvalidInput(f"{name}: no operating system found in the image")
            else:
                results[index] = InvalidInput(f"{name}: found {len(found)} operating systems; expected one")
    for index in alone:
        log.info("inspecting %s on its own: its filesystems could not be told apart from another image's", names[index])
        results[index] = inspect_images([images[index]], [names[index]], scratch, home)[0]
    return [results[index] for index in range(len(images))]


def _roots_by_drive(handle: guestfs.GuestFS, roots: Sequence[str]) -> dict[int, list[str]]:
    by_drive: dict[int, list[str]] = {}
    for root in roots:
        drives: set[int] = set()
        for device in handle.inspect_get_mountpoints(root).values():
            drives |= _drives_of(handle, device)
        if len(drives) == 1:
            by_drive.setdefault(drives.pop(), []).append(root)
    return by_drive


def _drives_of(handle: guestfs.GuestFS, device: str) -> set[int]:
    """The attached disks (by index) a device lives on; empty when it cannot be told."""
    try:
        if handle.is_lv(device):
            volume_group = handle.lvm_canonical_lv_name(device).split("/")[2]
            uuids = set(handle.vgpvuuids(volume_group))
            drives: set[int] = set()
            for volume in handle.pvs_full():
                if volume["pv_uuid"] in uuids:
                    drives |= _drives_of(handle, volume["pv_name"])
            return drives
        whole = device if handle.is_whole_device(device) else handle.part_to_dev(device)
        return {handle.device_index(whole)}
    except RuntimeError:
        return set()


def _facts_or_error(handle: guestfs.GuestFS, root: str, name: str, scratch: Path, home: Path) -> Any:
    try:
        return read_facts(handle, root, scratch, home)
    except RuntimeError as error:
        return InvalidInput(f"{name}: could not read the image: {_first_line(error)}")
    finally:
        try:
            handle.umount_all()
        except RuntimeError:
            pass


def read_facts(handle: guestfs.GuestFS, root: str, scratch: Path, home: Path) -> GuestFacts:
    """Mount ``root``'s filesystems read-only (as its fstab says) and read what inspection needs."""
    mountpoints = handle.inspect_get_mountpoints(root)
    for mountpoint in sorted(mountpoints, key=lambda path: (path.count("/"), len(path))):
        try:
            handle.mount_ro(mountpoints[mountpoint], mountpoint)
        except RuntimeError as error:
            log.info("cannot mount %s on %s: %s", mountpoints[mountpoint], mountpoint, _first_line(error))
    release_files = {path: text for path in (OS_RELEASE, *RELEASE_FILES) if (text := read_text(handle, path))}
    if OS_RELEASE not in release_files and (text := read_text(handle, "/usr/lib/os-release")):
        release_files[OS_RELEASE] = text
    return GuestFacts(
        os_type=handle.inspect_get_type(root),
        distro=handle.inspect_get_distro(root),
        major=handle.inspect_get_major_version(root),
        minor=handle.inspect_get_minor_version(root),
        arch=handle.inspect_get_arch(root),
        release_files=release_files,
        module_dirs=list_names(handle, "/lib/modules"),
        boot_files=[name for name in list_names(handle, "/boot") if name.startswith("vmlinuz-")],
        rpm_packages=read_rpm_packages(handle, scratch, home),
        boot=read_boot_config(handle),
    )


def read_boot_config(handle: guestfs.GuestFS) -> BootConfig:
    entries = {}
    for name in list_names(handle, "/boot/loader/entries")[:MAX_BLS_ENTRIES]:
        if name.endswith(".conf") and (text := read_text(handle, f"/boot/loader/entries/{name}")):
            entries[name.removesuffix(".conf")] = text
    efi = sorted(_glob(handle, "/boot/efi/EFI/*/"))
    return BootConfig(
        bls_entries=entries,
        grubenv=_first_text(handle, [f"{directory}/grubenv" for directory in (*GRUB_DIRECTORIES, *efi)]),
        grub_cfg=_first_text(handle, [f"{directory}/grub.cfg" for directory in (*GRUB_DIRECTORIES, *efi)]),
        sysconfig_kernel=read_text(handle, "/etc/sysconfig/kernel"),
    )


def read_rpm_packages(handle: guestfs.GuestFS, scratch: Path, home: Path) -> list[tuple[str, str]]:
    """(name, version-release.arch) of every package in the image's rpm database, read by the host's rpm."""
    for directory in RPM_DIRECTORIES:
        names = set(list_names(handle, directory))
        if "rpmdb.sqlite" in names:
            backend, wanted = "sqlite", ["rpmdb.sqlite", "rpmdb.sqlite-wal", "rpmdb.sqlite-shm"]
        elif "Packages.db" in names:
            backend, wanted = "ndb", ["Packages.db", "Index.db"]
        elif "Packages" in names:
            backend, wanted = "bdb_ro", ["Packages", "Name"]
        else:
            continue
        copy = Path(tempfile.mkdtemp(prefix="rpmdb-", dir=scratch))
        try:
            total = 0
            for name in sorted(names & set(wanted)):
                path = f"{directory}/{name}"
                if not handle.is_file(path):
                    continue
                total += handle.filesize(path)
                if total > MAX_RPMDB_BYTES:
                    log.warning("the rpm database in %s is larger than %d bytes; not reading it", directory, total)
                    return []
                handle.download(path, str(copy / name))
            return query_rpm_database(copy, backend, home)
        finally:
            shutil.rmtree(copy, ignore_errors=True)
    return []


def rpm_query_argv(database: Path, backend: str) -> list[str]:
    return [
        "rpm", "--dbpath", str(database), "--define", f"_db_backend {backend}",
        "-qa", "--qf", "%{NAME} %{VERSION}-%{RELEASE}.%{ARCH}\\n",
    ]  # fmt: skip


def query_rpm_database(database: Path, backend: str, home: Path) -> list[tuple[str, str]]:
    try:
        output = run(rpm_query_argv(database, backend), env=clean_environment(home), timeout=120)
    except ToolFailed as error:
        log.warning("cannot read the image's rpm database (%s backend): %s", backend, error)
        return []
    packages = []
    for line in output.splitlines():
        name, _, release = line.partition(" ")
        if name and release:
            packages.append((name, release))
    return packages


def read_text(handle: guestfs.GuestFS, path: str, limit: int = MAX_TEXT) -> str | None:
    """A small text file of the image, or None when absent, not a file, or larger than ``limit``."""
    try:
        if not handle.is_file(path, followsymlinks=True):
            return None
        size = handle.filesize(path)
        if size > limit:
            log.warning("ignoring %s in the image: %d bytes is more than %d", path, size, limit)
            return None
        data: bytes = handle.read_file(path)
    except RuntimeError:
        return None
    return data.decode("utf-8", "replace")


def list_names(handle: guestfs.GuestFS, directory: str) -> list[str]:
    """Entry names of a directory of the image (at most ``MAX_NAMES``), or none when it is not one."""
    try:
        if not handle.is_dir(directory, followsymlinks=True):
            return []
        names: list[str] = handle.ls(directory)
    except RuntimeError:
        return []
    return names[:MAX_NAMES]


def _first_text(handle: guestfs.GuestFS, paths: Sequence[str]) -> str | None:
    for path in paths:
        text = read_text(handle, path)
        if text is not None:
            return text
    return None


def _glob(handle: guestfs.GuestFS, pattern: str) -> list[str]:
    try:
        return [path.rstrip("/") for path in handle.glob_expand(pattern)][:MAX_NAMES]
    except RuntimeError:
        return []


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else error.__class__.__name__
