import pytest

from ofedrepo.errors import InvalidInput
from ofedrepo.images.bootloader import BootConfig
from ofedrepo.images.facts import GuestFacts, interpret, os_version
from synthetic.images import os_release

KERNEL = "4.18.0-372.26.1.el8_6.x86_64"


def facts(**changes: object) -> GuestFacts:
    base: dict[str, object] = {
        "os_type": "linux",
        "distro": "rocky",
        "major": 8,
        "minor": 6,
        "arch": "unknown",
        "release_files": {"/etc/os-release": os_release("rocky", "8.6", "Rocky Linux")},
        "module_dirs": [KERNEL],
    }
    base.update(changes)
    return GuestFacts(**base)  # type: ignore[arg-type]


def test_a_rhel_like_image() -> None:
    inspection = interpret(facts())
    assert inspection.as_dict() == {
        "distro": "rocky",
        "os_version": "8.6",
        "arch": "x86_64",
        "kernels": [KERNEL],
        "default_kernel": KERNEL,
        "default_kernel_rule": "newest installed kernel (no boot loader entry decided)",
        "ofed_distro": "rhel8.6",
    }


def test_centos7_minor_comes_from_centos_release() -> None:
    release_files = {
        "/etc/os-release": os_release("centos", "7", "CentOS Linux"),
        "/etc/centos-release": "CentOS Linux release 7.3.1611 (Core)\n",
    }
    assert os_version(facts(release_files=release_files, major=7, minor=0)) == "7.3"
    centos = interpret(facts(release_files=release_files, module_dirs=["3.10.0-514.el7.x86_64"]))
    assert (centos.distro, centos.os_version, centos.ofed_distro) == ("centos", "7.3", "rhel7.3")


def test_without_a_minor_release_the_kernel_tells_it() -> None:
    stream = {"/etc/os-release": os_release("centos", "8", "CentOS Stream")}
    inspection = interpret(facts(release_files=stream, minor=0, module_dirs=["4.18.0-372.9.1.el8.x86_64"]))
    assert (inspection.os_version, inspection.ofed_distro) == ("8", "rhel8.6")
    with pytest.raises(InvalidInput, match="cannot tell the minor release"):
        interpret(facts(release_files=stream, minor=0, module_dirs=["4.18.0-1.el8.x86_64"]))


def test_inspection_arch_wins_over_the_kernel_suffix() -> None:
    assert interpret(facts(arch="aarch64")).arch == "aarch64"


def test_debian_family_is_refused_naming_what_was_found() -> None:
    ubuntu = {"/etc/os-release": os_release("ubuntu", "22.04", "Ubuntu")}
    with pytest.raises(InvalidInput, match=r"ubuntu 22\.04 is not supported"):
        interpret(facts(distro="ubuntu", release_files=ubuntu, module_dirs=["5.15.0-91-generic"]))


def test_windows_is_refused() -> None:
    with pytest.raises(InvalidInput, match="found a windows system"):
        interpret(facts(os_type="windows", distro="windows", release_files={}))


def test_no_kernel_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match=r"rocky 8\.6: no kernel installed"):
        interpret(facts(module_dirs=["extra"], boot_files=["vmlinuz-0-rescue-abc"]))


def test_kernels_from_rpm_and_files_are_merged_and_sorted() -> None:
    old = "4.18.0-372.9.1.el8.x86_64"
    inspection = interpret(
        facts(
            module_dirs=[KERNEL],
            boot_files=[f"vmlinuz-{old}"],
            rpm_packages=[("kernel-core", old), ("kernel-core", KERNEL), ("bash", "4.4.20-4.el8_6.x86_64")],
            boot=BootConfig(sysconfig_kernel="DEFAULTKERNEL=kernel-core\n"),
        )
    )
    assert inspection.kernels == [old, KERNEL]
    assert inspection.default_kernel == KERNEL and "DEFAULTKERNEL" in inspection.default_kernel_rule


def test_a_hostile_os_release_id_is_not_used() -> None:
    hostile = {"/etc/os-release": 'ID="../../etc; rm -rf /"\nVERSION_ID="8.6"\n'}
    assert interpret(facts(release_files=hostile)).distro == "rocky"
