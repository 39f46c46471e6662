"""A build's scratch as a filesystem of its own, as large as ``OFEDREPO_BUILD_MAX_SCRATCH_BYTES``.

The scratch meter (``sandbox.ScratchMeter``) walks the tree between two instants: a tool that grows its
scratch faster than a walk comes round overshoots the cap (one ``fallocate`` burst took 4.7 GB under a 200 MB
cap in 0.12 s), and the data directory's disk pays. A filesystem cannot be overfilled: a root-run worker makes
the scratch an ext4 filesystem in a sparse file beside it (``<scratch>.img``, 0600 in root's ``work/``),
loop-mounted over the scratch directory with ``nosuid,nodev``, so the tool meets ``ENOSPC`` at the cap, its
inodes are bounded with its bytes, and the disk gives no more than the cap. Without root or loop devices (a
worker that is not root, a container without ``/dev/loop-control``) the meter alone stands, and the build log
says so.

The mount lives in the host's namespace, so that the worker reads the tool's output after the run; it is
detached when the attempt ends (``release``), by ``detach`` when a killed attempt's leftovers are removed, and
by the worker's orphan sweep for a worker that was itself killed. A failed build's kept scratch is its image
(``keep_as``), which an operator mounts read-only to read (the README says how).
"""

import logging
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from ofedrepo.errors import BuildFailed, ToolFailed
from ofedrepo.process import run
from ofedrepo.storage import clear_set_id_bits, disk_usage

log = logging.getLogger(__name__)

#: The smallest scratch filesystem made: less is no place to build MLNX_OFED in (its script wants 600 MB).
MIN_SIZE = 64 * 1024**2
#: A scratch filesystem is counted full when less than this share of it is free (ext4 keeps a few blocks
#: back for its metadata, so a filled one never reaches exactly zero).
FULL_SHARE = 0.01
_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def image_of(scratch: Path) -> Path:
    """The sparse file that holds ``scratch``'s filesystem; named after it, so that what removes an attempt's
    leftovers (``DataDir.left_by``) finds it."""
    return scratch.with_name(scratch.name + ".img")


def mkfs_argv(image: Path) -> list[str]:
    """ext4 without a journal (a scratch need not survive a crash) or reserved blocks, default inode ratio. Pure."""
    return ["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "nodiscard", str(image)]


def mount_argv(image: Path, scratch: Path) -> list[str]:
    """A loop mount that frees its loop device when unmounted; ``noinit_itable``: no background zeroing of
    inode tables, which would write most of a sparse image's metadata. Pure."""
    return ["mount", "-o", "loop,nosuid,nodev,noinit_itable", str(image), str(scratch)]


class ScratchVolume:
    """One attempt's scratch, on a filesystem of the cap's size when this host allows it."""

    def __init__(self, scratch: Path, size: int, enabled: bool) -> None:
        self.scratch = scratch
        self.image = image_of(scratch)
        self.size = size
        self.enabled = enabled
        self.mounted = False

    def create(self, note: Callable[[str], None]) -> None:
        """Make the scratch directory, and its filesystem where possible; ``note`` says which was made.

        The image is sparse: its size is promised, not taken. A promise the data directory's disk cannot keep
        loses the tool's writes silently (the loop device's "lost async page write"), so the filesystem is no
        larger than what the disk has free, less a tenth kept for the service; refused when that is too little
        to build in (``BuildFailed``)."""
        self.scratch.mkdir(mode=0o755)
        problem = self._unavailable()
        if problem is None:
            disk = os.statvfs(self.scratch.parent)
            free = disk.f_bavail * disk.f_frsize
            size = min(self.size, free - free // 10)
            if size < MIN_SIZE:
                raise BuildFailed(
                    f"the data directory's disk has {free} bytes free: too little for a build's scratch "
                    f"(OFEDREPO_BUILD_MAX_SCRATCH_BYTES is {self.size})"
                )
            if size < self.size:
                note(f"scratch: {size} bytes, what the data directory's disk has free (less a tenth)")
            self.size = size
            try:
                descriptor = os.open(self.image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    os.ftruncate(descriptor, self.size)
                finally:
                    os.close(descriptor)
                run(mkfs_argv(self.image), env=_ENVIRONMENT, timeout=120)
                run(mount_argv(self.image, self.scratch), env=_ENVIRONMENT, timeout=60)
                self.mounted = True
                (self.scratch / "lost+found").rmdir()  # the tool's -t directory starts empty
            except (OSError, ToolFailed) as error:
                problem = f"it could not be made ({str(error).strip().splitlines()[-1]})"
                self.release()
                self.scratch.mkdir(mode=0o755, exist_ok=True)
        if problem is None:
            note(f"scratch: a filesystem of its own, {self.size} bytes (OFEDREPO_BUILD_MAX_SCRATCH_BYTES)")
        else:
            note(f"scratch: measured against OFEDREPO_BUILD_MAX_SCRATCH_BYTES, not bounded by a filesystem: {problem}")

    def _unavailable(self) -> str | None:
        if not self.enabled:
            return "OFEDREPO_BUILD_SCRATCH_FILESYSTEM is off"
        if os.geteuid() != 0:
            return "the worker is not root (a loop mount needs it)"
        if not Path("/dev/loop-control").exists():
            return "this host has no loop devices (/dev/loop-control)"
        return None

    def full(self) -> bool:
        """Whether the tool has filled its filesystem (bytes or inodes); never, without one."""
        if not self.mounted:
            return False
        try:
            status = os.statvfs(self.scratch)
        except OSError:
            return False
        return status.f_bavail < status.f_blocks * FULL_SHARE or status.f_favail == 0

    def kept_size(self) -> int:
        """Bytes of disk the image would take if kept: blocks the tool freed are given back first (``fstrim``:
        the loop device punches them out of the image), so deleted data is not counted, and sparse files
        count what they hold. The whole tree's size without a filesystem of its own."""
        if not self.mounted:
            return disk_usage(self.scratch)
        subprocess.run(["fstrim", str(self.scratch)], env=_ENVIRONMENT, capture_output=True, check=False)
        try:
            return os.stat(self.image).st_blocks * 512
        except OSError:
            return 0

    def keep_as(self, kept: Path) -> bool:
        """Detach the filesystem and keep its image as ``kept`` (its files' set-ID bits cleared first, so that
        a mount without ``nosuid`` gives nobody the sandbox uid); False when it could not be walked whole."""
        if not self.mounted or not clear_set_id_bits(self.scratch):
            return False
        self.release(keep=kept)
        return True

    def release(self, keep: Path | None = None) -> None:
        """Detach the filesystem (lazily when a process still holds it) and remove its image, or move it to
        ``keep``."""
        if self.mounted:
            detach(self.scratch)
            self.mounted = False
        try:
            if keep is not None:
                os.rename(self.image, keep)
                os.utime(keep)
            else:
                self.image.unlink()
        except FileNotFoundError:
            pass


def detach(mount_point: Path) -> None:
    """Unmount a scratch filesystem; lazily when it is busy (a killed tool's last process not yet reaped), so
    that the directory is free at once and the loop device goes with the last user."""
    for argv in (["umount", str(mount_point)], ["umount", "--lazy", str(mount_point)]):
        if subprocess.run(argv, env=_ENVIRONMENT, capture_output=True, check=False).returncode == 0:
            return
    log.warning("could not unmount the scratch filesystem at %s", mount_point)


def mounted_under(directory: Path) -> list[Path]:
    """Mount points right below ``directory`` (``/proc/self/mountinfo``: field 5, octal escapes undone)."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = Path(re.sub(r"\\([0-7]{3})", lambda octal: chr(int(octal.group(1), 8)), fields[4]))
            if point.parent == directory:
                mounts.append(point)
    return mounts
