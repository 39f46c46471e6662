"""Image inspection for real: libguestfs on qcow2/raw images built by the tests, through `ofedrepo inspect`.

Appliance launches are the expensive part (~15 s each under TCG), so the good and the refused-after-boot
images share one launch, and every refusal that can happen before a launch is checked without one.
"""

import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ofedrepo.errors import InvalidInput
from ofedrepo.images.probe import probe
from ofedrepo.uploads import sha256_file
from synthetic import images as specs
from synthetic.images import hostile_images
from tests.conftest import VENV_BIN

GiB = 1024**3


def run_cli(
    data_dir: Path, *arguments: str, timeout: float = 300, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "OFEDREPO_DATA_DIR": str(data_dir), "COLUMNS": "200", **(extra or {})}
    environment.pop("OFEDREPO_DATABASE_URL", None)
    return subprocess.run(
        [str(VENV_BIN / "ofedrepo"), *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def inspected(tmp_path_factory: pytest.TempPathFactory, disk_images: dict[str, Path]) -> dict[str, object]:
    """One `ofedrepo -v inspect --json` over all five images: one appliance launch, results and log."""
    data_dir = tmp_path_factory.mktemp("inspect") / "var"
    order = [spec.name for spec in specs.ALL]
    started = time.monotonic()
    completed = run_cli(data_dir, "-v", "inspect", "--json", *(str(disk_images[name]) for name in order))
    return {
        "completed": completed,
        "seconds": time.monotonic() - started,
        "by_name": dict(zip(order, json.loads(completed.stdout), strict=True)),
        "data_dir": data_dir,
    }


def test_several_images_share_one_appliance_launch(inspected: dict[str, object]) -> None:
    completed = inspected["completed"]
    assert isinstance(completed, subprocess.CompletedProcess)
    launches = [line for line in completed.stderr.splitlines() if "appliance up in" in line]
    assert len(launches) == 1 and "for 5 image(s)" in launches[0], completed.stderr


#: qemu as on a host whose KVM fails: a launch that asks for KVM ends at once with KVM's own error; libguestfs'
#: probes (no kernel to boot) and TCG launches run the real qemu.
QEMU_WITHOUT_KVM = """#!/bin/sh
case " $* " in
*" -kernel "*)
    case " $* " in *accel=kvm*|*" -enable-kvm "*)
        echo "Could not access KVM kernel module: Permission denied" >&2; exit 1 ;;
    esac ;;
esac
exec {qemu} "$@"
"""


def test_a_failed_kvm_launch_falls_back_to_tcg_and_says_so(tmp_path: Path, disk_images: dict[str, Path]) -> None:
    """Forced on every host (the suite itself runs with force_tcg): the KVM launch fails, the product retries with
    TCG, says so, inspects, and remembers the verdict for the next launch."""
    real_qemu = shutil.which(f"qemu-system-{platform.machine()}")
    assert real_qemu is not None
    qemu = tmp_path / "qemu"
    qemu.write_text(QEMU_WITHOUT_KVM.format(qemu=real_qemu))
    qemu.chmod(0o755)
    environment = {name: value for name, value in os.environ.items() if name != "LIBGUESTFS_BACKEND_SETTINGS"}
    environment |= {"LIBGUESTFS_HV": str(qemu), "XDG_CACHE_HOME": str(tmp_path / "cache"),
                    "OFEDREPO_DATA_DIR": str(tmp_path / "var")}  # fmt: skip
    environment.pop("OFEDREPO_DATABASE_URL", None)
    completed = subprocess.run(
        [str(VENV_BIN / "ofedrepo"), "-v", "inspect", "--json", str(disk_images[specs.ROCKY8.name])],
        env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "could not launch with KVM" in completed.stderr and "retrying with TCG" in completed.stderr
    assert "(TCG) for 1 image(s)" in completed.stderr
    assert json.loads(completed.stdout)["distro"] == "rocky"
    assert (tmp_path / "cache" / "ofedrepo" / "kvm-unusable").is_file()  # the next launch goes to TCG at once


def test_rhel8_like_image_with_the_older_kernel_pinned(
    inspected: dict[str, object], disk_images: dict[str, Path]
) -> None:
    rocky = inspected["by_name"][specs.ROCKY8.name]  # type: ignore[index]
    assert rocky["distro"] == "rocky" and rocky["os_version"] == "8.6" and rocky["arch"] == "x86_64"
    assert rocky["kernels"] == [specs.ROCKY_OLD, specs.ROCKY_NEW]
    assert rocky["default_kernel"] == specs.ROCKY_OLD
    assert (
        rocky["default_kernel_rule"]
        == f"BLS entry {specs.MACHINE_ID}-{specs.ROCKY_OLD} named by saved_entry in grubenv"
    )
    assert rocky["ofed_distro"] == "rhel8.6"
    assert rocky["sha256"] == sha256_file(disk_images[specs.ROCKY8.name])
    assert {"id", "distro", "os_version", "arch", "kernels", "default_kernel", "ofed_distro", "sha256"} <= set(rocky)


def test_centos73_with_grub_cfg(inspected: dict[str, object]) -> None:
    centos = inspected["by_name"][specs.CENTOS73.name]  # type: ignore[index]
    assert (centos["distro"], centos["os_version"], centos["ofed_distro"]) == ("centos", "7.3", "rhel7.3")
    assert centos["kernels"] == [specs.CENTOS_OLD, specs.CENTOS_NEW]
    assert centos["default_kernel"] == specs.CENTOS_OLD
    assert centos["default_kernel_rule"].startswith("grub.cfg default = saved_entry in grubenv")


def test_lvm_root_with_a_separate_boot_partition(inspected: dict[str, object]) -> None:
    tripleo = inspected["by_name"][specs.TRIPLEO.name]  # type: ignore[index]
    assert (tripleo["distro"], tripleo["os_version"], tripleo["ofed_distro"]) == ("rhel", "9.2", "rhel9.2")
    assert tripleo["kernels"] == [specs.TRIPLEO_KERNEL]
    assert tripleo["default_kernel"] == specs.TRIPLEO_KERNEL
    assert tripleo["default_kernel_rule"].startswith("newest BLS entry")


def test_refusals_after_inspection_name_what_was_found(inspected: dict[str, object]) -> None:
    completed = inspected["completed"]
    assert isinstance(completed, subprocess.CompletedProcess)
    assert completed.returncode == 2
    by_name = inspected["by_name"]
    assert isinstance(by_name, dict)
    assert "ubuntu 22.04 is not supported" in by_name[specs.UBUNTU.name]["error"]
    assert "no kernel installed" in by_name[specs.NO_KERNEL.name]["error"]
    assert "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2


def test_known_images_are_answered_from_the_database(
    inspected: dict[str, object], disk_images: dict[str, Path], tmp_path: Path
) -> None:
    data_dir = inspected["data_dir"]
    assert isinstance(data_dir, Path)
    copy = tmp_path / "same-bytes-other-name.qcow2"
    copy.write_bytes(disk_images[specs.ROCKY8.name].read_bytes())
    completed = run_cli(data_dir, "-v", "inspect", "--json", str(copy))
    assert completed.returncode == 0, completed.stderr
    assert "appliance up" not in completed.stderr
    assert json.loads(completed.stdout)["default_kernel"] == specs.ROCKY_OLD
    human = run_cli(data_dir, "inspect", str(disk_images[specs.CENTOS73.name]))
    assert human.returncode == 0
    assert specs.CENTOS_OLD in human.stdout and "rhel7.3" in human.stdout and "grub.cfg default" in human.stdout


@pytest.fixture
def hostile(tmp_path: Path, disk_images: dict[str, Path]) -> dict[str, Path]:
    return hostile_images(tmp_path, disk_images[specs.ROCKY8.name])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("random", "not a disk image"),
        ("truncated", "truncated or corrupt"),
        ("backing", "backing file"),
        ("shadow", "backing file"),
        ("tiny", "too small"),
    ],
)
def test_hostile_files_are_refused_before_any_launch(
    hostile: dict[str, Path], tmp_path: Path, name: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        probe(hostile[name], tmp_path, 4096 * GiB)


def test_the_cli_refuses_hostile_files_with_one_line_each(hostile: dict[str, Path], tmp_path: Path) -> None:
    """Refused before any appliance: libguestfs is given a qemu that records each run, and none happens."""
    runs = tmp_path / "qemu-runs"
    qemu = tmp_path / "qemu"
    qemu.write_text(f'#!/bin/sh\necho "$*" >> {runs}\nexit 1\n')
    qemu.chmod(0o755)
    paths = (str(path) for path in hostile.values())
    completed = run_cli(tmp_path / "var", "inspect", *paths, timeout=60, extra={"LIBGUESTFS_HV": str(qemu)})
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(hostile), completed.stderr
    assert not runs.exists(), "no appliance should have been launched"
    assert not any((tmp_path / "var" / "work").iterdir()), "scratch left behind"


def test_the_cli_refuses_what_is_not_a_file(tmp_path: Path) -> None:
    for argument in (str(tmp_path), str(tmp_path / "missing.qcow2")):
        completed = run_cli(tmp_path / "var", "inspect", argument, timeout=60)
        assert completed.returncode == 2 and completed.stderr.startswith("error:"), completed.stderr


def test_raw_images_are_probed_with_an_explicit_raw_format(disk_images: dict[str, Path], tmp_path: Path) -> None:
    raw = tmp_path / "centos.raw"
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk_images[specs.CENTOS73.name]), str(raw)], check=True
    )
    probed = probe(raw, tmp_path, 4096 * GiB)
    assert probed.format == "raw" and probed.virtual_size == specs.CENTOS73.size_mib * 1024 * 1024
