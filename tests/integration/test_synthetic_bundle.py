"""The synthetic bundle and its mlnx_add_kernel_support.sh behave like NVIDIA's (issue 4 relies on it)."""

import subprocess
import tarfile
from pathlib import Path

from elftools.elf.elffile import ELFFile

from ofedrepo.archive import Limits, extract
from ofedrepo.rpmfile import read_header
from tests.conftest import TARGET_KERNEL
from tests.support.synthetic_bundle import BundleSpec


def run_script(bundle_dir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(bundle_dir / "mlnx_add_kernel_support.sh"), "-m", str(bundle_dir), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bundle_layout(bundle_dir: Path) -> None:
    spec = BundleSpec()
    assert bundle_dir.name == spec.name
    assert (bundle_dir / ".mlnx").read_text().strip() == spec.ofed_version
    assert (bundle_dir / "distro").read_text().strip() == spec.distro
    assert (bundle_dir / ".arch").read_text().strip() == spec.arch
    assert "BEGIN PGP PUBLIC KEY BLOCK" in (bundle_dir / "RPM-GPG-KEY-Mellanox").read_text()
    assert all(read_header(path).signer for path in (bundle_dir / "RPMS").glob("*.rpm"))
    assert list((bundle_dir / "SRPMS").glob("*.src.rpm"))


def test_missing_kernel_sources_fail_like_the_vendor_script(bundle_dir: Path, tmp_path: Path) -> None:
    completed = run_script(
        bundle_dir, "-k", TARGET_KERNEL, "-s", str(tmp_path / "nowhere"), "--make-tgz", "-t", str(tmp_path), "-y"
    )
    assert completed.returncode != 0
    assert "Kernel sources directory" in completed.stderr
    assert not list(tmp_path.glob("*-ext.tgz"))


def test_distro_must_match(bundle_dir: Path, kernel_sources: Path, tmp_path: Path) -> None:
    completed = run_script(
        bundle_dir, "-k", TARGET_KERNEL, "-s", str(kernel_sources / TARGET_KERNEL), "--make-tgz", "-t", str(tmp_path),
        "-y", "--distro", "rhel7.9",
    )  # fmt: skip
    assert completed.returncode != 0 and "not rhel7.9" in completed.stderr


def test_without_a_package_and_real_modules(bundle_dir: Path, kernel_sources: Path, tmp_path: Path) -> None:
    completed = run_script(
        bundle_dir, "-k", TARGET_KERNEL, "-s", str(kernel_sources / TARGET_KERNEL), "--make-tgz", "-t", str(tmp_path),
        "-y", "--skip-repo", "--distro", "rhel8.6", "--without-knem",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    archive = tmp_path / f"{BundleSpec().name}-ext.tgz"
    assert f"Created {archive}" in completed.stdout
    assert "contains unsigned rpms" in completed.stdout
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    extract(archive, tmp_path / "out", Limits(max_bytes=10**9, max_members=10_000))
    assert not any("/RPMS/" in name and "knem" in name for name in names)
    rpms = tmp_path / "out" / f"{BundleSpec().name}-ext" / "RPMS"
    (kmod,) = rpms.glob("kmod-mlnx-ofa_kernel-*.rpm")
    header = read_header(kmod)
    assert header.signer is None and header.module_kernels == {TARGET_KERNEL}
    unpacked = tmp_path / "kmod"
    unpacked.mkdir()
    rpm2cpio = subprocess.run(["rpm2cpio", str(kmod)], capture_output=True, check=True)
    subprocess.run(["cpio", "-idm", "--quiet"], input=rpm2cpio.stdout, cwd=unpacked, check=True)
    (module, *_) = unpacked.rglob("*.ko")
    with module.open("rb") as handle:
        modinfo = ELFFile(handle).get_section_by_name(".modinfo").data().split(b"\0")
    assert f"vermagic={TARGET_KERNEL} SMP mod_unload modversions ".encode() in modinfo
