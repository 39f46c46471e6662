"""The synthetic bundles and their mlnx_add_kernel_support.sh behave as NVIDIA's do (VENDOR facts, one each).

Every test here runs the bundle's own script, as a user would, and looks at what it did: these are the
facts ofedrepo is built on, so a model that drifted from them would make every other test worthless.
"""

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from ofedrepo.bundles.archive import Limits, extract
from ofedrepo.rpmfile import read_header
from synthetic.bundle import (
    SCRIPT,
    STOCK_PACKAGES,
    BundleSpec,
    add_kernel_support,
    make_kernel_sources,
    tool_shims,
)

TARGETS = {
    "current": "4.18.0-372.26.1.el8_6.x86_64",
    "legacy4": "3.10.0-1160.105.1.el7.x86_64",
    "split5": "4.18.0-147.8.1.el8_1.x86_64",
}
LIMITS = Limits(max_bytes=10**9, max_members=10_000)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model-kernels")
    for kernel in TARGETS.values():
        make_kernel_sources(root, kernel)
    make_kernel_sources(
        root, "4.18.0-372.99.1.el8_6.x86_64",
        compile_error="drivers/net/ethernet/mellanox/mlx5/core/main.c:1432:9: error: implicit declaration of "
        "function 'pci_enable_msix_range' [-Werror=implicit-function-declaration]",
    )  # fmt: skip
    return root


def run_script(bundle: Path, *arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(bundle / SCRIPT), "-m", str(bundle), *arguments], capture_output=True, text=True, timeout=300,
        env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def unpack(archive: Path, into: Path) -> Path:
    extract(archive, into, LIMITS)
    return next(into.iterdir())


def names(rpms: Path) -> dict[str, Path]:
    return {read_header(path).name + " " + read_header(path).release: path for path in rpms.glob("*.rpm")}


def test_stock_layouts(generation_bundles: dict[str, tuple[BundleSpec, Path]]) -> None:
    for spec, bundle in generation_bundles.values():
        assert bundle.name == spec.name
        assert [(bundle / name).read_text().strip() for name in (".mlnx", "distro", ".arch", ".supported_kernels")] == [
            spec.ofed_version, spec.distro, spec.arch, spec.ga_kernel
        ]  # fmt: skip
        for name in ("mlnxofedinstall", "create_mlnx_ofed_installers.pl", "common_installers.pl", "uninstall.sh"):
            assert (bundle / name).is_file(), name
        with tarfile.open(bundle / "src" / f"MLNX_OFED_SRC-{spec.ofed_version}.tgz") as tar:
            members = tar.getnames()
        assert f"MLNX_OFED_SRC-{spec.ofed_version}/install.pl" in members
        assert sum(name.endswith(".src.rpm") for name in members) == 7 and not (bundle / "SRPMS").exists()
        rpms = bundle / "RPMS" / ("UPSTREAM_LIBS" if spec.split else "")
        headers = [read_header(path) for path in rpms.glob("*.rpm")]
        assert all(header.signer for header in headers)  # every stock package is NVIDIA-signed
        kmods = [header for header in headers if header.name.startswith("kmod-")]
        assert len(kmods) == 7 and all(header.module_kernels == {spec.ga_kernel} for header in kmods)
        assert all(header.release.endswith(spec.dist) for header in kmods)
        hypervisor = next(header for header in headers if header.name == "mlnx-ofed-hypervisor")
        assert {"kmod-mlnx-ofa_kernel", "kmod-iser", "kmod-srp"} <= {entry.name for entry in hypervisor.requires}
        assert "stale" in (rpms / "repodata" / "repomd.xml").read_text()
    assert len(list(generation_bundles["current"][1].glob("RPMS/*.rpm"))) == STOCK_PACKAGES
    spec, split = generation_bundles["split5"]
    for variant in ("MLNX_LIBS", "UPSTREAM_LIBS"):
        linked = [path for path in (split / "RPMS" / variant).glob("*.rpm") if path.is_symlink()]
        assert linked and all(os.readlink(path).startswith("../COMMON/") for path in linked)
    assert list((split / "RPMS" / "UPSTREAM_LIBS").glob("rdma-core-*.rpm"))
    assert not list((split / "RPMS" / "MLNX_LIBS").glob("rdma-core-*.rpm"))


def test_root_only_and_no_distro_detection_on_this_host(bundle_dir: Path, sources: Path, tmp_path: Path) -> None:
    kernel = TARGETS["current"]
    with tempfile.TemporaryDirectory() as readable:  # pytest's own directories are the test user's alone
        Path(readable).chmod(0o755)
        script = shutil.copy(bundle_dir / SCRIPT, readable)
        as_nobody = subprocess.run(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "bash", script,
             "-m", str(bundle_dir), "-k", kernel],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert as_nobody.returncode == 1 and "You must be root to run mlnx_add_kernel_support.sh" in as_nobody.stdout
    undetected = run_script(bundle_dir, "-k", kernel, "-s", str(sources / kernel), "-t", str(tmp_path), "-y")
    assert undetected.returncode == 1 and "Linux Distribution (" in undetected.stdout
    assert "is not supported" in undetected.stdout and not list(tmp_path.glob("*-ext.tgz"))
    assert run_script(bundle_dir, "--bogus").returncode == 1


def test_current_rebuild(bundle_dir: Path, sources: Path, tmp_path: Path) -> None:
    kernel = TARGETS["current"]
    output = tmp_path / "out"
    completed = run_script(
        bundle_dir, "-k", kernel, "-s", str(sources / kernel), "--make-tgz", "-t", str(output), "-y", "--skip-repo",
        "--distro", "rhel8.6", "--without-knem", env=tool_shims(tmp_path / "shims"),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout
    archive = output / f"{bundle_dir.name}-ext.tgz"
    assert f"Created {archive}" in completed.stdout
    assert sorted(path.name for path in output.iterdir()) == [archive.name]  # work and log dirs removed
    ext = unpack(archive, tmp_path / "ext")
    assert ext.name == f"{bundle_dir.name}-ext"
    assert (ext / "distro").read_text().strip() == "skip-distro-check"
    assert (ext / ".supported_kernels").read_text().split() == [BundleSpec().ga_kernel, kernel]
    packages = names(ext / "RPMS")
    assert not any(name.startswith(("kmod-", "kernel-mft-mlnx-utils")) for name in packages)  # deleted
    assert not any(name.startswith("knem") and "kver" in name for name in packages)  # --without-knem
    kver = "kver." + kernel.replace("-", "_")
    for rebuilt in ("mlnx-ofa_kernel-modules", "kernel-mft", "iser", "isert", "srp", "mlnx-nvme"):
        (key,) = [key for key in packages if key.split()[0] == rebuilt]
        assert key.endswith(kver) and read_header(packages[key]).signer is None
    ofa = [key for key in packages if key.split()[0] == "mlnx-ofa_kernel"]
    assert len(ofa) == 2  # the rebuilt mlnx-ofa_kernel beside the stock one
    modules = read_header(packages[next(k for k in packages if k.startswith("mlnx-ofa_kernel-modules"))])
    assert modules.module_kernels == {kernel}
    unpacked = tmp_path / "payload"
    unpacked.mkdir()
    payload = subprocess.run(["rpm2cpio", str(modules_path(packages))], capture_output=True, check=True).stdout
    subprocess.run(["cpio", "-idm", "--quiet"], input=payload, cwd=unpacked, check=True)
    with next(unpacked.rglob("mlx5_core.ko")).open("rb") as handle:
        modinfo = ELFFile(handle).get_section_by_name(".modinfo").data().split(b"\0")
    assert f"vermagic={kernel} SMP mod_unload modversions ".encode() in modinfo


def modules_path(packages: dict[str, Path]) -> Path:
    return next(path for key, path in packages.items() if key.startswith("mlnx-ofa_kernel-modules"))


def rebuilt(
    generation_bundles: dict[str, tuple[BundleSpec, Path]], generation: str, sources: Path, tmp_path: Path
) -> tuple[BundleSpec, Path, Path]:
    """(spec, stock bundle, unpacked -ext) of one generation rebuilt for its target kernel."""
    spec, bundle = generation_bundles[generation]
    kernel = TARGETS[generation]
    return spec, bundle, unpack(add_kernel_support(bundle, kernel, sources / kernel, tmp_path / "out"), tmp_path / "x")


def test_legacy_keeps_the_ga_kmods_and_logs_beside_the_output(
    generation_bundles: dict[str, tuple[BundleSpec, Path]], sources: Path, tmp_path: Path
) -> None:
    spec, bundle, ext = rebuilt(generation_bundles, "legacy4", sources, tmp_path)
    kernel = TARGETS["legacy4"]
    packages = names(ext / "RPMS")
    kmods = [read_header(path) for key, path in packages.items() if key.startswith("kmod-")]
    assert len(kmods) == 7 and all(header.module_kernels == {spec.ga_kernel} for header in kmods)
    assert any(key.startswith("mlnx-ofa_kernel-modules") for key in packages)
    # Run again on its own output: the rebuilt packages for the kernel are there.
    again = run_script(ext, "-k", kernel, "-t", str(tmp_path / "again"), "-y", "--skip-repo", "--distro", "rhel7.9")
    assert again.returncode == 30 and f"Required kernel ({kernel}) is already supported" in again.stdout
    broken = "4.18.0-372.99.1.el8_6.x86_64"
    failed = run_script(bundle, "-k", broken, "-s", str(sources / broken), "-t", str(tmp_path / "t"), "-y",
                        "--skip-repo", "--distro", "rhel7.9")  # fmt: skip
    log = Path(re.search(r"ERROR: See (\S+)", re.sub(r"\x1b\[[0-9;]*m", "", failed.stdout)).group(1))  # type: ignore[union-attr]
    assert failed.returncode == 1 and log.parent == tmp_path / "t" and log.name.startswith("mlnx_ofed_iso.")


def test_split_links_the_rebuilt_packages_into_both_library_sets(
    generation_bundles: dict[str, tuple[BundleSpec, Path]], sources: Path, tmp_path: Path
) -> None:
    _, _, ext = rebuilt(generation_bundles, "split5", sources, tmp_path)
    names_in_common = [path.name for path in (ext / "RPMS" / "COMMON").glob("*kver*.rpm")]
    assert names_in_common and not list((ext / "RPMS").rglob("kmod-*"))
    for variant in ("MLNX_LIBS", "UPSTREAM_LIBS"):
        for name in names_in_common:
            assert os.readlink(ext / "RPMS" / variant / name) == f"../COMMON/{name}"


def test_without_skip_repo_createrepo_is_required_and_kernel_metadata_packages_are_made(
    bundle_dir: Path, sources: Path, tmp_path: Path
) -> None:
    kernel = TARGETS["current"]
    no_createrepo = run_script(
        bundle_dir, "-k", kernel, "-s", str(sources / kernel), "-t", str(tmp_path / "no"), "-y", "--distro", "rhel8.6",
        env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip
    assert no_createrepo.returncode == 1 and "'createrepo' is not installed!" in no_createrepo.stdout
    ext = unpack(
        add_kernel_support(bundle_dir, kernel, sources / kernel, tmp_path / "out", skip_repo=False), tmp_path / "x"
    )
    packages = {read_header(path).name: read_header(path) for path in (ext / "RPMS").glob("mlnx-ofed-*.rpm")}
    for_kernel = packages[f"mlnx-ofed-hypervisor-{kernel}"]
    assert for_kernel.release.endswith(".skip.distro.check")  # made after `distro` was rewritten
    required = {entry.name for entry in for_kernel.requires}
    assert {"mlnx-ofa_kernel-modules", "iser", "srp"} <= required and not any(n.startswith("kmod-") for n in required)
    assert "mlnx-ofed-hypervisor" in packages  # the stock one stays, still requiring the deleted kmods
    assert (ext / "RPMS" / "repodata" / "repomd.xml").is_file() and "stale" not in (
        ext / "RPMS" / "repodata" / "repomd.xml"
    ).read_text()


def test_a_compile_error_is_only_in_the_logs(bundle_dir: Path, sources: Path, tmp_path: Path) -> None:
    kernel = "4.18.0-372.99.1.el8_6.x86_64"
    failed = run_script(
        bundle_dir, "-k", kernel, "-s", str(sources / kernel), "-t", str(tmp_path), "-y", "--skip-repo",
        "--distro", "rhel8.6",
    )  # fmt: skip
    assert failed.returncode == 1
    said = re.sub(r"\x1b\[[0-9;]*m", "", failed.stdout)
    assert 'ERROR: Failed executing "' in said and "install.pl" in said
    log = Path(re.search(r"ERROR: See (\S+)", said).group(1))  # type: ignore[union-attr]
    assert log.parent.name.endswith("_logs") and log.parent.parent == tmp_path and log.is_file()
    assert "pci_enable_msix_range" not in said
    package_logs = list(log.parent.rglob("mlnx-ofa_kernel-*.rpmbuild.log"))
    assert package_logs and "error: implicit declaration" in package_logs[0].read_text()


def test_make_iso(bundle_dir: Path, sources: Path, tmp_path: Path) -> None:
    kernel = TARGETS["current"]
    iso = add_kernel_support(bundle_dir, kernel, sources / kernel, tmp_path / "out", iso=True)
    assert iso.name == f"{bundle_dir.name}-ext.iso"
    extract(iso, tmp_path / "ext", LIMITS)
    # mkisofs puts the directory's content at the top: only the file name says which bundle this is
    assert (tmp_path / "ext" / "distro").read_text().strip() == "skip-distro-check"
    no_mkisofs = run_script(
        bundle_dir, "-k", kernel, "--make-iso", "-y", env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    )
    assert no_mkisofs.returncode == 1 and "mkisofs command not found" in no_mkisofs.stdout
