"""What one version holds, decided on headers alone: the situations real -ext bundles put ofedrepo in."""

import pytest

from ofedrepo.errors import InvalidInput
from ofedrepo.repos.packageset import choose, compare_evr, infer_kernel, is_metapackage, replacements, satisfies
from ofedrepo.rpmfile import Dependency, PackageHeader

GA = "4.18.0-372.9.1.el8.x86_64"
K = "4.18.0-372.26.1.el8_6.x86_64"
K_ = K.replace("-", "_")
OFED = "OFED.5.8.3.0.7.1"


def package(name: str, release: str, files: tuple[str, ...] = (), requires: tuple[str, ...] = (),
            arch: str = "x86_64", version: str = "5.8", signer: str | None = None) -> PackageHeader:  # fmt: skip
    """A header; ``requires`` entries are ``name`` or ``name OP evr``."""
    parsed = tuple(Dependency(*entry.split(" ")) for entry in requires)
    provides = (Dependency(name, "=", f"{version}-{release}"),)
    return PackageHeader(name, version, release, arch, files, signer, requires=parsed, provides=provides)


def modules(kernel: str, *names: str) -> tuple[str, ...]:
    return tuple(f"/lib/modules/{kernel}/extra/mlnx-ofa_kernel/{name}.ko" for name in names)


STOCK_KMOD = package("kmod-mlnx-ofa_kernel", f"{OFED}.rhel8u6", modules(GA, "mlx5_core", "mlx5_ib"), signer="a")
REBUILT = package("mlnx-ofa_kernel-modules", f"{OFED}.kver.{K_}", modules(K, "mlx5_core", "mlx5_ib"))
UTILS = package("mlnx-ofa_kernel", f"{OFED}.rhel8u6", ("/usr/sbin/ibdev2netdev",), signer="a")
DEVEL_GA = package("mlnx-ofa_kernel-devel", f"{OFED}.rhel8u6", (f"/usr/src/ofa_kernel/x86_64/{GA}/Module.symvers",))
DEVEL_K = package("mlnx-ofa_kernel-devel", f"{OFED}.kver.{K_}", (f"/usr/src/ofa_kernel/x86_64/{K}/Module.symvers",))
ISER = package("iser", f"{OFED}.kver.{K_}", modules(K, "ib_iser"))
RDMA = package("rdma-core", "1.58", ("/usr/lib64/libibverbs.so.1",), version="58mlnx43", signer="a")
DOC = ("/usr/share/doc/mlnx-ofed-hypervisor/mlnx-ofed-hypervisor-release",)
HYPERVISOR = package(
    "mlnx-ofed-hypervisor", "3.0.7.0.rhel8.6", DOC, arch="noarch", signer="a",
    requires=(f"kmod-mlnx-ofa_kernel >= 5.8-{OFED}.rhel8u6", f"kmod-iser >= 5.8-{OFED}.rhel8u6",
              f"mlnx-ofa_kernel >= 5.8-{OFED}.rhel8u6", "rdma-core >= 58mlnx43-1.58", "coreutils",
              "rpmlib(CompressedFileNames) <= 3.0.4-1"),
)  # fmt: skip


def test_a_5x_ext_bundle_keeps_the_kernels_packages_and_rewrites_the_metadata_package() -> None:
    """The script deleted the kmods; the stock -devel of the GA kernel and the stock metadata stayed."""
    headers = {f"RPMS/{header.nevra}.rpm": header for header in (REBUILT, UTILS, DEVEL_GA, DEVEL_K, ISER, RDMA)}
    headers["RPMS/hypervisor.rpm"] = HYPERVISOR
    selection = choose(headers, K)
    assert [left.nevra for left in selection.left_out] == [DEVEL_GA.nevra]
    assert GA in selection.left_out[0].reason
    assert "RPMS/hypervisor.rpm" not in selection.kept and len(selection.kept) == 5
    (rewrite,) = selection.rewrites
    assert rewrite.requires == (
        Dependency("mlnx-ofa_kernel-modules", "=", REBUILT.evr),
        Dependency("iser", "=", ISER.evr),
        Dependency("mlnx-ofa_kernel", ">=", f"5.8-{OFED}.rhel8u6"),
        Dependency("rdma-core", ">=", "58mlnx43-1.58"),
        Dependency("coreutils"),  # the system's, not ours to judge
    )
    assert any(note.startswith("kmod-iser >= ") and "→ iser = " in note for note in rewrite.notes)


def test_a_4x_ext_bundle_leaves_the_ga_kmods_out_and_follows_their_modules() -> None:
    """The 4.x script kept the GA kmods: their modules say which rebuilt package stands in for them."""
    renamed = package("ofa-modules-for-k", f"{OFED}.kver.{K_}", modules(K, "mlx5_core", "mlx5_ib"))
    headers = {"a.rpm": STOCK_KMOD, "b.rpm": renamed, "c.rpm": UTILS, "d.rpm": HYPERVISOR, "e.rpm": ISER}
    selection = choose(headers, K)
    assert [left.key for left in selection.left_out] == ["a.rpm"]
    (rewrite,) = selection.rewrites
    assert Dependency("ofa-modules-for-k", "=", renamed.evr) in rewrite.requires


def test_a_requirement_nothing_stands_in_for_is_dropped_and_said() -> None:
    knem_hpc = package("mlnx-ofed-hpc", "3.0.7.0.rhel8.6", (), arch="noarch", requires=("kmod-knem >= 1.1-1",))
    selection = choose({"hpc.rpm": knem_hpc, "m.rpm": REBUILT}, K)
    (rewrite,) = selection.rewrites
    assert rewrite.requires == () and "no package built for" in rewrite.notes[0]


def test_resolvable_metadata_packages_are_published_as_they_are() -> None:
    """The stock bundle for its own GA kernel: nothing to leave out, nothing to rewrite."""
    ga_iser = package("kmod-iser", f"{OFED}.rhel8u6", modules(GA, "ib_iser"))
    headers = {"k.rpm": STOCK_KMOD, "i.rpm": ga_iser, "u.rpm": UTILS, "r.rpm": RDMA, "h.rpm": HYPERVISOR}
    selection = choose(headers, GA)
    assert (selection.left_out, selection.rewrites) == ((), ())
    assert sorted(selection.kept) == sorted(headers)


def test_duplicates_are_kept_once_and_dependents_of_left_out_packages_go_too() -> None:
    needs_kmod = package("mlnx-nfs-tools", "1", ("/usr/bin/x",), requires=("kmod-mlnx-ofa_kernel",))
    selection = choose(
        {"a/x.rpm": RDMA, "b/x.rpm": RDMA, "k.rpm": STOCK_KMOD, "n.rpm": needs_kmod, "m.rpm": REBUILT}, K
    )
    reasons = {left.key: left.reason for left in selection.left_out}
    assert reasons["b/x.rpm"] == "the same package as a/x.rpm"
    assert reasons["n.rpm"].startswith("requires kmod-mlnx-ofa_kernel, which only kmod-mlnx-ofa_kernel-")
    assert set(selection.kept) == {"a/x.rpm", "m.rpm"}


def test_a_release_naming_another_kernel_is_left_out() -> None:
    other = package("knem", f"OFED.1.kver.{'4.18.0-372.32.1.el8_6.x86_64'.replace('-', '_')}", ("/usr/bin/knem",))
    assert choose({"o.rpm": other}, K).left_out[0].reason.startswith("its release")


def test_name_based_stand_ins_for_deleted_kmods() -> None:
    mft = package("kernel-mft", f"307.kver.{K_}", modules(K, "mst_pci"), version="4.22.1")
    knem = package("knem-modules", f"{OFED}.kver.{K_}", modules(K, "knem"))
    built = [mft, knem, ISER]
    assert replacements(Dependency("kmod-kernel-mft-mlnx"), [], built) == [mft]
    assert replacements(Dependency("kmod-knem"), [], built) == [knem]
    assert replacements(Dependency("iser-kmp-default"), [], built) == [ISER]
    assert replacements(Dependency("kmod-xpmem"), [], built) == []


def test_versions_compare_as_rpm_does() -> None:
    assert compare_evr("5.10-1", "5.9-1") == 1 and compare_evr("1:1.0-1", "2.0-1") == 1
    assert satisfies(Dependency("x", "=", "5.8-OFED.5.8.rhel8u6"), Dependency("x", ">=", "5.8-OFED.5.8"))
    assert not satisfies(Dependency("x", "=", "5.8-1"), Dependency("x", ">", "5.8-1"))
    assert satisfies(Dependency("x", "=", "5.8-1"), Dependency("x"))
    assert is_metapackage(HYPERVISOR) and not is_metapackage(UTILS)


def test_a_metapackage_is_known_by_its_content_whatever_its_arch() -> None:
    """DOCA's ``doca-ofed`` is an x86_64 package of requirements and no files; an empty package requiring
    nothing, or one installing a program, is not a metapackage."""
    doca_ofed = package("doca-ofed", "091000", (), requires=("doca-ofed-userspace", "kmod-iser"), version="3.1.0")
    assert is_metapackage(doca_ofed)
    assert not is_metapackage(package("empty", "1", (), requires=("rpmlib(CompressedFileNames) <= 3.0.4-1",)))
    assert not is_metapackage(package("tool", "1", ("/usr/bin/tool",), requires=("rdma-core",)))


def test_the_kernel_of_a_bundle() -> None:
    assert infer_kernel({"k.rpm": REBUILT, "u.rpm": UTILS}, None) == K
    assert infer_kernel({"g.rpm": STOCK_KMOD, "k.rpm": REBUILT}, None) == K  # the rebuilt one, not the GA
    assert infer_kernel({"g.rpm": STOCK_KMOD, "k.rpm": REBUILT}, GA) == GA
    with pytest.raises(InvalidInput, match=f"built for {K}, not 4.18.0-372.32.1"):
        infer_kernel({"k.rpm": REBUILT}, "4.18.0-372.32.1.el8_6.x86_64")
    with pytest.raises(InvalidInput, match="pass the kernel explicitly"):
        infer_kernel({"u.rpm": UTILS}, None)
    twice = package("iser", f"{OFED}.kver.x", modules("4.18.0-372.32.1.el8_6.x86_64", "ib_iser"))
    with pytest.raises(InvalidInput, match="several kernels"):
        infer_kernel({"g.rpm": STOCK_KMOD, "t.rpm": twice}, None)


def test_the_rebuilt_package_of_a_name_replaces_the_repositorys_and_debug_packages_stay_out() -> None:
    """DOCA <= 3.1: the tool's KMP build makes a userspace mlnx-ofa_kernel whose release names no kernel, beside
    the repository's; only the rebuilt one is published, so dnf never chooses by how dist tags sort."""
    stock_utils = package("mlnx-ofa_kernel", f"{OFED}.rhel9u6", ("/etc/init.d/openibd",), signer="a")
    rebuilt_utils = package("mlnx-ofa_kernel", f"{OFED}.debian12", ("/etc/init.d/openibd",))
    rebuilt_kmod = package("kmod-mlnx-ofa_kernel", f"{OFED}.1.debian12", modules(K, "mlx5_core"))
    debuginfo = package("kmod-mlnx-ofa_kernel-debuginfo", f"{OFED}.1.debian12", (f"/usr/lib/debug/lib/modules/{K}/x",))
    headers = {
        "bundle/stock-utils.rpm": stock_utils,
        "bundle/rdma.rpm": RDMA,
        "rebuilt/utils.rpm": rebuilt_utils,
        "rebuilt/kmod.rpm": rebuilt_kmod,
        "rebuilt/debuginfo.rpm": debuginfo,
    }
    rebuilt = frozenset(key for key in headers if key.startswith("rebuilt/"))
    selection = choose(headers, K, rebuilt)
    assert selection.kept == ("bundle/rdma.rpm", "rebuilt/kmod.rpm", "rebuilt/utils.rpm")
    reasons = {left.key: left.reason for left in selection.left_out}
    assert reasons == {
        "bundle/stock-utils.rpm": f"replaced by {rebuilt_utils.nevra}, built for {K}",
        "rebuilt/debuginfo.rpm": "debug symbols: no package list installs them",
    }
    # Told nothing about its origin, a package whose release names no kernel stands beside the stock one.
    assert "bundle/stock-utils.rpm" in choose(headers, K).kept


def test_an_ext_bundles_stock_userspace_package_gives_way_to_the_one_rebuilt_for_the_kernel() -> None:
    """MLNX_OFED: the non-KMP rebuild names the kernel in every release (``.kver.<K_>``), headers alone tell."""
    rebuilt_utils = package("mlnx-ofa_kernel", f"{OFED}.kver.{K_}", ("/usr/sbin/ibdev2netdev",))
    headers = {"RPMS/stock.rpm": UTILS, "RPMS/rebuilt.rpm": rebuilt_utils, "RPMS/modules.rpm": REBUILT}
    selection = choose(headers, K)
    assert selection.kept == ("RPMS/modules.rpm", "RPMS/rebuilt.rpm")
    assert selection.left_out[0].reason == f"replaced by {rebuilt_utils.nevra}, built for {K}"
