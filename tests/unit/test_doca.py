"""DOCA-OFED's pure parts: names, identity from headers, the package set without DKMS, the DIB list, choice."""

from pathlib import Path

import pytest

from ofedrepo.builds.requests import choose_bundle
from ofedrepo.bundles.doca import SOURCES_DIR, TOOL, identify, parse_compact_distro
from ofedrepo.bundles.names import DOCA, BundleIdentity, parse_bundle_name
from ofedrepo.errors import NotABundle
from ofedrepo.models import Bundle
from ofedrepo.repos.packageset import choose
from ofedrepo.repos.repofile import dib_package_list
from tests.unit.test_packageset import modules, package
from workers.runner import doca_kernel_support_argv

K = "5.14.0-570.42.2.el9_6.x86_64"
GA = "5.14.0-570.12.1.el9_6.x86_64"
OFED = "OFED.25.10.1.2.8.0.1"
EXTRA = package("doca-extra", "1", (TOOL,), arch="noarch", version="2510.0.1")
SOURCE = package("doca-ofed-source", "1", (f"{SOURCES_DIR}/MLNX_OFED_SRC-25.10-1.2.8.0.tgz",), arch="noarch")
META = package("doca-ofed", "125000_25.10_rhel9", (), arch="noarch", version="3.2.0",
               requires=("doca-ofed-userspace", "mlnx-ofa_kernel-dkms", "xpmem-dkms"))  # fmt: skip
USERSPACE = package("doca-ofed-userspace", "125000_25.10_rhel9", (), arch="noarch", version="3.2.0")
DKMS = package("mlnx-ofa_kernel-dkms", OFED, ("/usr/src/mlnx-ofa_kernel-dkms-25.10/dkms.conf",), arch="noarch")
REBUILT = package("kmod-mlnx-ofa_kernel", f"{OFED}.1.rhel9u6", modules(K, "mlx5_core"), version="25.10")
STOCK = package("kmod-mlnx-ofa_kernel", f"{OFED}.rhel9u6", modules(GA, "mlx5_core"), version="25.10")
KERNEL_META = package("doca-kernel-5.14.0.570.42.2.el9.6.x86.64", "1", (), arch="noarch",
                      requires=(f"kmod-mlnx-ofa_kernel = 25.10-{OFED}.1.rhel9u6",))  # fmt: skip


def test_doca_names_round_trip() -> None:
    identity = BundleIdentity("25.10-1.2.8.0", "rhel9", "x86_64", kind=DOCA, doca_version="3.2.0")
    assert identity.name == "DOCA_HOST-3.2.0-25.10-1.2.8.0-rhel9-x86_64"
    assert parse_bundle_name(identity.name).identity == identity
    assert identity.dib_version == "25.10-1"


@pytest.mark.parametrize(("compact", "tag"), [("rhel95", "rhel9.5"), ("rhel9", "rhel9"), ("rhel100", "rhel10.0")])
def test_doca_writes_distros_without_their_dot(compact: str, tag: str) -> None:
    assert parse_compact_distro(compact) == tag


def test_identity_comes_from_the_packages_and_the_tools_are_required() -> None:
    headers = {"a": EXTRA, "b": SOURCE, "c": META, "d": REBUILT}
    identity, extra, source, tarball = identify(headers)
    assert (identity.doca_version, identity.ofed_version, identity.distro, identity.arch) == (
        "3.2.0", "25.10-1.2.8.0", "rhel9", "x86_64",
    )  # fmt: skip
    assert (extra, source, tarball) == ("a", "b", f"{SOURCES_DIR}/MLNX_OFED_SRC-25.10-1.2.8.0.tgz")
    with pytest.raises(NotABundle, match="without doca-extra and doca-ofed-source"):
        identify({"c": META, "d": REBUILT})


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
    assert dib_package_list(names) == "doca-ofed-userspace doca-kernel-5.14.0.570.42.2.el9.6.x86.64 mlnx-fw-updater"
    assert dib_package_list({"doca-ofed", "doca-ofed-userspace", "mlnx-fw-updater"}) == "doca-ofed mlnx-fw-updater"


def test_a_doca_repository_of_a_major_fits_its_minors() -> None:
    mlnx = Bundle(id=1, name="m", ofed_version="24.10-1.1.4.0", distro="rhel9.6", arch="x86_64", kind="mlnx_ofed")
    doca = Bundle(id=2, name="d", ofed_version="25.10-1.2.8.0", distro="rhel9", arch="x86_64", kind=DOCA)
    assert choose_bundle([mlnx, doca], "rhel9.6", "x86_64", None).id == 2  # the newer driver
    assert choose_bundle([mlnx, doca], "rhel9.6", "x86_64", None, kind="mlnx_ofed").id == 1
    assert choose_bundle([mlnx, doca], "rhel9.2", "x86_64", None).id == 2
    mlnx_of_major = Bundle(id=3, name="m", ofed_version="24.10-1.1.4.0", distro="rhel9", arch="x86_64", kind="x")
    with pytest.raises(Exception, match="no MLNX_OFED bundle or DOCA-OFED repository fits"):
        choose_bundle([mlnx_of_major], "rhel9.2", "x86_64", None)


def test_doca_kernel_support_is_given_the_sources_directory_never_k() -> None:
    argv = doca_kernel_support_argv(Path("/usr/src/kernels") / K, f"{SOURCES_DIR}/MLNX_OFED_SRC-25.10-1.2.8.0.tgz")
    assert argv == ["bash", TOOL, "-s", f"/usr/src/kernels/{K}", "-t", f"{SOURCES_DIR}/MLNX_OFED_SRC-25.10-1.2.8.0.tgz"]


@pytest.mark.parametrize("name", ["DOCA.Ab3dE5gH9k", "DOCA.8schi_6y"])
def test_the_work_directory_is_read_from_the_tools_output(name: str) -> None:
    from workers.pipeline import BUILDING_UNDER

    match = BUILDING_UNDER.search(f"Building under /tmp/{name}\n".encode())
    assert match is not None and match.group(1) == f"/tmp/{name}".encode()
    assert BUILDING_UNDER.search(b"Building under /tmp/DOCA.x/../../etc\n") is None
