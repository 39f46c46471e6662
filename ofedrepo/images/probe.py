"""A disk image file on the host, checked before anything boots on it.

An image comes from outside and is hostile until probed. A qcow2 can name any host file as its backing
file or external data file (``/etc/shadow``), claim an absurd virtual size, or be cut short by an
interrupted download; a file of random bytes would be "raw" to a tool that guesses. So: the format is
decided here from the file's magic and always passed explicitly; qcow2 metadata is read with
``qemu-img info``/``check`` (which never open a backing file) and refused unless it is self-contained,
consistent and of a sane size; a raw file must start like a disk (partition table, LVM or a filesystem).
"""

import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofedrepo.errors import InvalidInput, ToolFailed
from ofedrepo.process import clean_environment, run

QCOW2_MAGIC = b"QFI\xfb"

#: Formats qemu knows that we refuse by name, recognised by their first bytes.
_FOREIGN_MAGICS = {
    b"KDMV": "vmdk",
    b"# Disk DescriptorFile": "vmdk",
    b"conectix": "vpc (vhd)",
    b"vhdxfile": "vhdx",
    b"QED\x00": "qed",
    b"LUKS\xba\xbe": "luks",
    b"<<< Oracle VM VirtualBox": "vdi",
}

#: ``qemu-img check`` exit statuses: 0 clean, 3 leaked clusters only (harmless for reading).
_CHECK_OK = (0, 3)


@dataclass(frozen=True)
class ProbedImage:
    """An image file that passed the probe: safe to hand to libguestfs with this explicit format."""

    path: Path
    format: str
    virtual_size: int
    file_size: int


def sniff_format(head: bytes, name: str) -> str:
    """``qcow2`` or ``raw`` from the first 64 KiB of the file; anything else is refused by name."""
    if head.startswith(QCOW2_MAGIC):
        return "qcow2"
    for magic, format_name in _FOREIGN_MAGICS.items():
        if head.startswith(magic):
            raise InvalidInput(f"{name}: {format_name} images are not accepted; convert it to qcow2 or raw")
    if len(head) >= 0x10048 and head[0x10040:0x10048] == b"_BHRfS_M":
        return "raw"
    disk_signatures = (
        head[510:512] == b"\x55\xaa",  # MBR (and GPT's protective MBR)
        head[512:520] == b"EFI PART",  # GPT
        head[1080:1082] == b"\x53\xef",  # ext2/3/4 superblock
        head[:4] == b"XFSB",  # XFS
        any(head[offset : offset + 8] == b"LABELONE" for offset in range(0, 2048, 512)),  # LVM PV
    )
    if any(disk_signatures):
        return "raw"
    raise InvalidInput(
        f"{name}: not a disk image (not qcow2, and no partition table, LVM or filesystem at the start of the file)"
    )


def check_qemu_info(info: dict[str, Any], name: str, expected_format: str, max_virtual_size: int) -> int:
    """Refuse what ``qemu-img info`` reveals: another format, a backing or data file, an absurd size."""
    if info.get("format") != expected_format:
        raise InvalidInput(f"{name}: qemu-img reads it as {info.get('format')!r}, not {expected_format}")
    if "backing-filename" in info or "full-backing-filename" in info:
        raise InvalidInput(
            f"{name}: refusing an image with a backing file ({str(info.get('backing-filename'))[:200]!r}); "
            "flatten it first: qemu-img convert -O qcow2 in.qcow2 out.qcow2"
        )
    specific = info.get("format-specific", {}).get("data", {})
    if "data-file" in specific:
        raise InvalidInput(
            f"{name}: refusing a qcow2 with an external data file ({str(specific['data-file'])[:200]!r})"
        )
    if specific.get("corrupt"):
        raise InvalidInput(f"{name}: the qcow2 is marked corrupt")
    virtual_size = info.get("virtual-size")
    if not isinstance(virtual_size, int) or virtual_size <= 0:
        raise InvalidInput(f"{name}: the image has no usable virtual size")
    if virtual_size > max_virtual_size:
        raise InvalidInput(
            f"{name}: virtual size {virtual_size} bytes is larger than the limit of {max_virtual_size} bytes "
            "(OFEDREPO_IMAGE_MAX_VIRTUAL_SIZE)"
        )
    return virtual_size


def qemu_img_info_argv(path: Path, image_format: str) -> list[str]:
    return ["qemu-img", "info", "--output=json", "-f", image_format, str(path)]


def qemu_img_check_argv(path: Path) -> list[str]:
    return ["qemu-img", "check", "--output=json", "-f", "qcow2", str(path)]


def probe(path: Path, home: Path, max_virtual_size: int, name: str | None = None) -> ProbedImage:
    """Check ``path`` as described above; raise ``InvalidInput`` naming the problem."""
    name = name or path.name
    try:
        status = path.stat()
    except OSError as error:
        raise InvalidInput(f"{name}: cannot read it ({error.strerror})") from None
    if not stat.S_ISREG(status.st_mode):
        raise InvalidInput(f"{name}: not a regular file")
    if status.st_size < 1024:
        raise InvalidInput(f"{name}: {status.st_size} bytes is too small to be a disk image")
    with path.open("rb") as reader:
        head = reader.read(0x10048)
    image_format = sniff_format(head, name)
    environment = clean_environment(home)
    try:
        info = json.loads(run(qemu_img_info_argv(path, image_format), env=environment, timeout=60))
    except ToolFailed as error:
        raise InvalidInput(f"{name}: qemu-img cannot read it as {image_format}: {_last_line(error.output)}") from None
    virtual_size = check_qemu_info(info, name, image_format, max_virtual_size)
    if image_format == "qcow2":
        _check_qcow2_consistency(path, name, environment)
    elif status.st_size % 512:
        raise InvalidInput(f"{name}: a raw disk image is a whole number of 512-byte sectors; this one is not")
    return ProbedImage(path=path, format=image_format, virtual_size=virtual_size, file_size=status.st_size)


def _check_qcow2_consistency(path: Path, name: str, environment: dict[str, str]) -> None:
    """``qemu-img check``: a truncated or damaged qcow2 has clusters past its end or broken refcounts."""
    argv = qemu_img_check_argv(path)
    try:
        run(argv, env=environment, timeout=300)
    except ToolFailed as error:
        if error.returncode in _CHECK_OK:
            return
        detail = "truncated or corrupt" if error.returncode in (1, 2) else _last_line(error.output)
        raise InvalidInput(f"{name}: the qcow2 is {detail} (qemu-img check exited with {error.returncode})") from None


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
