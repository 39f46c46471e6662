import os

import pytest

from ofedrepo.errors import InvalidInput
from ofedrepo.images.probe import check_qemu_info, qemu_img_check_argv, qemu_img_info_argv, sniff_format

GiB = 1024**3


def qcow2_info(**changes: object) -> dict[str, object]:
    info: dict[str, object] = {
        "virtual-size": 10 * GiB,
        "format": "qcow2",
        "format-specific": {"type": "qcow2", "data": {"compat": "1.1", "corrupt": False}},
    }
    info.update(changes)
    return info


def test_qcow2_is_recognised_by_its_magic() -> None:
    assert sniff_format(b"QFI\xfb" + bytes(100), "x") == "qcow2"


@pytest.mark.parametrize(
    ("head", "name"),
    [(b"KDMV" + bytes(600), "vmdk"), (b"conectix" + bytes(600), "vpc"), (b"vhdxfile" + bytes(600), "vhdx")],
)
def test_other_formats_are_refused_by_name(head: bytes, name: str) -> None:
    with pytest.raises(InvalidInput, match=name):
        sniff_format(head, "image")


def test_raw_needs_a_disk_signature() -> None:
    mbr = bytearray(4096)
    mbr[510:512] = b"\x55\xaa"
    assert sniff_format(bytes(mbr), "x") == "raw"
    lvm = bytearray(4096)
    lvm[512:520] = b"LABELONE"
    assert sniff_format(bytes(lvm), "x") == "raw"
    with pytest.raises(InvalidInput, match="not a disk image"):
        sniff_format(os.urandom(65536).replace(b"\x55\xaa", b"\x00\x00"), "random.img")
    with pytest.raises(InvalidInput, match="not a disk image"):
        sniff_format(bytes(65536), "zeros.img")


def test_a_sane_qcow2_passes() -> None:
    assert check_qemu_info(qcow2_info(), "x", "qcow2", 100 * GiB) == 10 * GiB


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (qcow2_info(**{"backing-filename": "/etc/shadow"}), "backing file"),
        (qcow2_info(**{"full-backing-filename": "/etc/shadow"}), "backing file"),
        (qcow2_info(**{"format-specific": {"data": {"data-file": "/etc/shadow"}}}), "external data file"),
        (qcow2_info(**{"format-specific": {"data": {"corrupt": True}}}), "marked corrupt"),
        (qcow2_info(**{"virtual-size": 2**60}), "larger than the limit"),
        (qcow2_info(**{"virtual-size": "lots"}), "no usable virtual size"),
        (qcow2_info(format="raw"), "not qcow2"),
    ],
)
def test_what_qemu_img_reveals_is_refused(info: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_qemu_info(info, "x", "qcow2", 100 * GiB)


def test_the_format_is_always_explicit(tmp_path: object) -> None:
    from pathlib import Path

    path = Path("/images/a.qcow2")
    assert qemu_img_info_argv(path, "raw") == ["qemu-img", "info", "--output=json", "-f", "raw", str(path)]
    assert "-f" in qemu_img_check_argv(path) and "qcow2" in qemu_img_check_argv(path)
