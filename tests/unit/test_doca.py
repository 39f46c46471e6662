"""DOCA-OFED's pure parts: names, identity from what NVIDIA's files carry, the package set without DKMS, the DIB
list, choice."""

from pathlib import Path

import pytest

from ofedrepo.builds.requests import choose_bundle
from ofedrepo.bundles.doca import BUILDING_UNDER, TOOL, doca_kernel_support_argv, identify, parse_compact_distro
from ofedrepo.bundles.names import BundleIdentity, parse_bundle_name
from ofedrepo.bundles.vendors import dib_package_list
from ofedrepo.errors import NotABundle
from ofedrepo.kinds import BundleKind
from ofedrepo.models import Bundle
from ofedrepo.repos.packageset import choose
from tests.unit.test_packageset import modules, package

K = "5.14.0-570.42.2.el9_6.x86_64"
GA = "5.14.0-570.12.1.el9_6.x86_64"
OFED = "OFED.25.10.1.2.8.0.1"
RESOURCES = "/opt/mellanox/doca/tools/resources"
TARBALL = f"{RESOURCES}/MLNX_OFED_SRC-25.10-1.2.8.0.tgz"
EXTRA = package("doca-extra", "1", (TOOL,), arch="noarch", version="2510.0.1")
SOURCE = package("doca-ofed-source", "1", (TARBALL,), arch="noarch")
# DOCA 3.1.0: the driver sources inside doca-extra itself (install-pl-deprecation-plan.md, B.1.1).
EXTRA_31 = package("doca-extra", "1", (TOOL, f"{RESOURCES}/MLNX_OFED_SRC-25.07-0.9.7.0.tgz"), arch="noarch")
# Metapackages: x86_64, released as the build number alone (doca-kernel-3.1.0-091000.x86_64.rpm).
META = package(
    "doca-ofed", "125000", (), version="3.2.0", requires=("doca-ofed-userspace", "mlnx-ofa_kernel-dkms", "xpmem-dkms")
)
USERSPACE = package("doca-ofed-userspace", "125000", (), version="3.2.0", requires=("rdma-core",))
DKMS = package("mlnx-ofa_kernel-dkms", OFED, ("/usr/src/mlnx-ofa_kernel-dkms-25.10/dkms.conf",), arch="noarch")
REBUILT = package("kmod-mlnx-ofa_kernel", f"{OFED}.1.rhel9u6", modules(K, "mlx5_core"), version="25.10")
STOCK = package("kmod-mlnx-ofa_kernel", f"{OFED}.rhel9u6", modules(GA, "mlx5_core"), version="25.10")
KERNEL_META = package("doca-kernel-5.14.0.570.42.2.el9.6.x86.64", "1", (), arch="noarch",
                      requires=(f"kmod-mlnx-ofa_kernel = 25.10-{OFED}.1.rhel9u6",))  # fmt: skip
HOST = package(
    "doca-host", "125000_25.10_rhel9", ("/usr/share/doca-host-3.2.0/repo/repodata/repomd.xml",), version="3.2.0"
)


def test_doca_names_round_trip() -> None:
    identity = BundleIdentity("25.10-1.2.8.0", "rhel9", "x86_64", kind=BundleKind.DOCA, doca_version="3.2.0")
    assert identity.name == "DOCA_HOST-3.2.0-25.10-1.2.8.0-rhel9-x86_64"
    assert parse_bundle_name(identity.name).identity == identity
    assert identity.dib_version == "25.10-1"


@pytest.mark.parametrize(
    ("compact", "tag"),
    [
        ("rhel95", "rhel9.5"),
        ("rhel9", "rhel9"),
        ("rhel100", "rhel10.0"),
        ("ubuntu2404", "ubuntu24.04"),
        ("sles15sp6", "sles15sp6"),
        ("openeuler2203sp4", "openeuler22.03sp4"),
    ],  # fmt: skip
)
def test_doca_writes_distros_without_their_dot(compact: str, tag: str) -> None:
    assert parse_compact_distro(compact) == tag


def test_identity_comes_from_the_local_repo_package_or_the_online_trees_path() -> None:
    headers = {"a": EXTRA, "b": SOURCE, "c": META, "d": REBUILT}
    identity, facts = identify(headers, HOST, ["doca-host-3.2.0-125000_25.10_rhel9.x86_64.rpm"])
    assert (identity.doca_version, identity.ofed_version, identity.distro, identity.arch) == (
        "3.2.0", "25.10-1.2.8.0", "rhel9", "x86_64",
    )  # fmt: skip
    assert (facts["tool_package"], facts["source_package"], facts["ofed_source"]) == ("a", "b", TARBALL)
    assert facts["identified_by"] == "doca-host-3.2.0-125000_25.10_rhel9.x86_64"
    assert facts["packages"] == ["c", "d"] and set(facts["left_out"]) == {"a", "b"}
    tree, _ = identify(headers, None, ["x86_64", "/srv/mirror/doca/3.2.0/rhel9/x86_64"])
    assert tree == identity
    # the tree's words are the path's last three, wherever else a version-like directory is
    nested, _ = identify(headers, None, ["/srv/1.2.3/rhel8/x86_64/doca/3.2.0/rhel9/x86_64/"])
    assert nested == identity
    arm = package("kmod-iser", f"{OFED}.rhel9u6", modules("5.14.0-570.12.1.el9_6.aarch64", "ib_iser"), arch="aarch64")
    (arm_identity, _) = identify({"a": EXTRA, "b": SOURCE, "d": arm}, None, ["/m/doca/3.2.0/rhel9/arm64-sbsa"])
    assert arm_identity.arch == "aarch64"


def test_doca_31_keeps_its_driver_sources_in_doca_extra() -> None:
    meta = package("doca-kernel", "091000", (), version="3.1.0", requires=("kmod-iser",))
    identity, facts = identify({"e": EXTRA_31, "m": meta}, None, ["/srv/doca/3.1.0/rhel9.6/x86_64/"])
    assert (identity.ofed_version, identity.distro, facts["source_package"]) == ("25.07-0.9.7.0", "rhel9.6", "e")


def test_what_cannot_be_identified_is_refused_saying_why() -> None:
    with pytest.raises(NotABundle, match="without doca-extra"):
        identify({"c": META, "d": REBUILT}, HOST, [])
    with pytest.raises(NotABundle, match="one .*MLNX_OFED_SRC-<ofed>.tgz"):
        identify({"a": EXTRA, "c": META}, HOST, [])
    with pytest.raises(NotABundle, match="by a path ending in doca/<version>/<distro>/<arch>"):
        identify({"a": EXTRA, "b": SOURCE, "c": META}, None, ["x86_64", "/srv/doca31"])
    with pytest.raises(NotABundle, match="packages of another DOCA release"):
        identify({"a": EXTRA, "b": SOURCE, "c": META}, None, ["/srv/doca/3.1.0/rhel9.6/x86_64"])
    doca_kernel_31 = package("doca-kernel", "091000", (), version="3.1.0", requires=("kmod-iser",))
    with pytest.raises(NotABundle, match="packages of another DOCA release"):  # doca-kernel is a profile too
        identify({"a": EXTRA, "b": SOURCE, "k": doca_kernel_31}, None, ["/srv/doca/3.2.0/rhel9/x86_64"])
    with pytest.raises(NotABundle, match="by a path ending in doca/<version>/<distro>/<arch>"):
        identify({"a": EXTRA, "b": SOURCE, "c": META}, None, ["/srv/mirror/3.2.0/rhel9/x86_64"])  # no doca/
    with pytest.raises(NotABundle, match="one architecture"):
        identify({"a": EXTRA, "b": SOURCE, "c": META}, None, ["/srv/doca/3.2.0/rhel9/aarch64"])


def test_a_version_holds_no_dkms_and_no_other_kernels_kmods() -> None:
    headers = {"dkms": DKMS, "meta": META, "user": USERSPACE, "stock": STOCK, "rebuilt": REBUILT, "km": KERNEL_META}
    selection = choose(headers, K)
    left = {left.key: left.reason for left in selection.left_out}
    assert set(left) == {"dkms", "stock"} and "a DKMS package" in left["dkms"]
    (rewrite,) = selection.rewrites  # doca-ofed required DKMS: it now requires the kmods built for K
    assert rewrite.original.name == "doca-ofed"
    assert [str(requirement) for requirement in rewrite.requires] == [
        "doca-ofed-userspace", f"kmod-mlnx-ofa_kernel = 25.10-{OFED}.1.rhel9u6",
    ]  # fmt: skip
    assert any("xpmem-dkms dropped" in note for note in rewrite.notes)
    assert "km" in selection.kept  # doca-kernel-<K'> resolves as it is


def test_the_dib_list_of_a_doca_version() -> None:
    names = {"doca-ofed", "doca-ofed-userspace", "doca-kernel-5.14.0.570.42.2.el9.6.x86.64", "mlnx-fw-updater"}
    name = "DOCA_HOST-3.2.0-25.10-1.2.8.0-rhel9-x86_64"
    expected = "doca-ofed-userspace doca-kernel-5.14.0.570.42.2.el9.6.x86.64 mlnx-fw-updater"
    assert dib_package_list(name, names) == expected
    assert (
        dib_package_list(name, {"doca-ofed", "doca-ofed-userspace", "mlnx-fw-updater"}) == "doca-ofed mlnx-fw-updater"
    )


def test_a_doca_repository_of_a_major_fits_its_minors() -> None:
    mlnx = Bundle(
        id=1, name="m", ofed_version="24.10-1.1.4.0", distro="rhel9.6", arch="x86_64", kind=BundleKind.MLNX_OFED
    )
    doca = Bundle(id=2, name="d", ofed_version="25.10-1.2.8.0", distro="rhel9", arch="x86_64", kind=BundleKind.DOCA)
    assert choose_bundle([mlnx, doca], "rhel9.6", "x86_64", None).id == 2  # the newer driver
    assert choose_bundle([mlnx, doca], "rhel9.6", "x86_64", None, kind=BundleKind.MLNX_OFED).id == 1
    assert choose_bundle([mlnx, doca], "rhel9.2", "x86_64", None).id == 2
    mlnx_of_major = Bundle(
        id=3, name="m", ofed_version="24.10-1.1.4.0", distro="rhel9", arch="x86_64", kind=BundleKind.MLNX_OFED
    )
    with pytest.raises(Exception, match="no MLNX_OFED bundle or DOCA-OFED repository fits"):
        choose_bundle([mlnx_of_major], "rhel9.2", "x86_64", None)


def test_doca_kernel_support_is_given_the_sources_directory_never_k() -> None:
    argv = doca_kernel_support_argv(Path("/usr/src/kernels") / K, TARBALL)
    assert argv == ["bash", TOOL, "-s", f"/usr/src/kernels/{K}", "-t", TARBALL]


@pytest.mark.parametrize("name", ["DOCA.Ab3dE5gH9k", "DOCA.8schi_6y"])
def test_the_work_directory_is_read_from_the_tools_output(name: str) -> None:
    match = BUILDING_UNDER.search(f"Building under /tmp/{name}\n".encode())
    assert match is not None and match.group(1) == f"/tmp/{name}".encode()
    assert BUILDING_UNDER.search(b"Building under /tmp/DOCA.x/../../etc\n") is None


@pytest.mark.parametrize(
    ("ofed", "doca"),
    [("25.10-1." + "2" * 60, "3.2.0"), ("25.10-1.2.8.0", "3.2." + "0" * 40)],
)
def test_an_over_long_or_malformed_version_is_refused_before_it_names_anything(ofed: str, doca: str) -> None:
    source = package("doca-ofed-source", "1", (f"{RESOURCES}/MLNX_OFED_SRC-{ofed}.tgz",), arch="noarch")
    with pytest.raises(NotABundle, match="is not an? (OFED|DOCA) version"):
        identify({"a": EXTRA, "b": source, "d": REBUILT}, None, [f"/srv/doca/{doca}/rhel9/x86_64"])
