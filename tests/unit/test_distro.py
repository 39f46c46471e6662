import pytest

from ofedrepo.distro import names_distro, ofed_distro_for_kernel, ofed_distro_for_os, parse_ofed_distro
from ofedrepo.errors import InvalidInput
from ofedrepo.kernel import parse_kernel_release


@pytest.mark.parametrize(
    ("kernel", "tag"),
    [
        ("4.18.0-372.26.1.el8_6.x86_64", "rhel8.6"),
        ("4.18.0-372.9.1.el8.x86_64", "rhel8.6"),
        ("3.10.0-514.el7.x86_64", "rhel7.3"),
        ("3.10.0-1160.88.1.el7.x86_64", "rhel7.9"),
        ("5.14.0-284.11.1.el9_2.x86_64", "rhel9.2"),
        ("5.14.0-362.8.1.el9_3.x86_64+rt", "rhel9.3"),
        ("5.14.0-362.8.1.el9_3.aarch64+64k", "rhel9.3"),
        ("5.4.17-2136.307.3.1.el8uek.x86_64", "ol8"),  # UEK spans minor releases: Oracle Linux's major
        ("5.14.0-687.5.1.el9.x86_64", "rhel9.8"),
        ("6.12.0-124.8.1.el10.x86_64", "rhel10.1"),
    ],
)
def test_distro_tag_from_kernel(kernel: str, tag: str) -> None:
    assert str(ofed_distro_for_kernel(parse_kernel_release(kernel))) == tag


def test_kernel_without_el_tag_has_no_distro() -> None:
    assert ofed_distro_for_kernel(parse_kernel_release("6.1.0-56-amd64")) is None


@pytest.mark.parametrize("distro_id", ["rhel", "centos", "rocky", "almalinux", "ol"])
def test_rhel_family_maps_to_rhel_bundles(distro_id: str) -> None:
    assert ofed_distro_for_os(distro_id, "8.6").tag == "rhel8.6"


def test_non_rpm_distros_are_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="ubuntu 22.04 is not supported"):
        ofed_distro_for_os("ubuntu", "22.04")


@pytest.mark.parametrize(
    "tag", ["rhel8.6", "sles15sp3", "ubuntu22.04", "ol9.2", "rhel9", "rhel7.6alternate", "euleros2.0sp11"]
)
def test_parses_tags(tag: str) -> None:
    assert parse_ofed_distro(tag).tag == tag


@pytest.mark.parametrize(
    "bad", ["", "8.6", "rhel", "rhel8.6;x", "RHEL8.6", "rhel/8", "rhel9..6", "rhel9.6.", "rhel9.6x.1"]
)
def test_rejects_bad_tags(bad: str) -> None:
    with pytest.raises(InvalidInput, match="invalid MLNX_OFED distro tag"):
        parse_ofed_distro(bad)


def test_a_major_release_names_its_minors_and_nothing_else() -> None:
    assert names_distro("ol8", "ol8.6") and names_distro("rhel8.6", "rhel8.6")
    assert not names_distro("ol8", "ol9.2") and names_distro("rhel8", "rhel8")
    assert not names_distro("ol8", "rhel8.6") and not names_distro("rhel8.6", "rhel8.60")
