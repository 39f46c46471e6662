"""A real dnf reads the served tree over HTTP, as image builds and DIB's mlnx-ofed element do."""

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from elftools.elf.elffile import ELFFile

from synthetic.bundle import BundleSpec
from tests.conftest import TARGET_KERNEL, RunningServer
from tests.support.kernel_feed import serve

LATEST = f"/repos/{BundleSpec().name}/{TARGET_KERNEL}/latest"
DNF_CONF = "[main]\ngpgcheck=1\nbest=True\nskip_if_unavailable=False\ninstall_weak_deps=False\n"


def dnf(
    root: Path, repo_definition: str, *arguments: str, succeed: bool = True, plugin: str = "download"
) -> subprocess.CompletedProcess[str]:
    """dnf confined to ``root``: its own config, a private reposdir, cache and rpm database."""
    reposdir = root / "reposdir"
    reposdir.mkdir(parents=True, exist_ok=True)
    (reposdir / "mlnx-ofed.repo").write_text(repo_definition)
    (root / "dnf.conf").write_text(DNF_CONF)
    installroot = root / "installroot"
    installroot.mkdir(exist_ok=True)
    argv = [
        "dnf", "-y", "--config", str(root / "dnf.conf"), "--installroot", str(installroot),
        "--setopt", f"reposdir={reposdir}", "--setopt", f"cachedir={root / 'cache'}",
        "--releasever", "8", "--forcearch", "x86_64", "--disableplugin", "*", "--enableplugin", plugin,
        *arguments,
    ]  # fmt: skip
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert (completed.returncode == 0) is succeed, completed.stdout + completed.stderr
    return completed


def dib_style_repo(server: RunningServer) -> str:
    """What the mlnx-ofed element writes from DIB_MLNX_OFED_REPO."""
    repo = server.url + LATEST
    return (
        f"[mlnx_ofed]\nname=MLNX_OFED\nbaseurl={repo}/RPMS\nenabled=1\ngpgcheck=1\ngpgkey={repo}/RPM-GPG-KEY-Mellanox\n"
    )


def test_repoquery_lists_exactly_the_bundles_packages(
    tmp_path: Path, published_server: RunningServer, rebuilt_ext_tgz: Path
) -> None:
    completed = dnf(
        tmp_path,
        dib_style_repo(published_server),
        "repoquery",
        "-q",
        "--qf",
        "%{name}-%{version}-%{release}.%{arch}.rpm",
    )
    served = {line for line in completed.stdout.split() if line.endswith(".rpm")}
    with httpx.Client() as client:
        listing = client.get(f"{published_server.url}{LATEST}/RPMS/", params={"format": "json"}).json()
    published = {entry["name"] for entry in listing["entries"] if entry["type"] == "file"}
    assert served == published and len(served) > 10


def test_download_verifies_its_checksum(tmp_path: Path, published_server: RunningServer) -> None:
    destination = tmp_path / "downloads"
    dnf(
        tmp_path, dib_style_repo(published_server), "download", "--destdir", str(destination), "mlnx-ofa_kernel-modules"
    )
    (package,) = destination.glob("mlnx-ofa_kernel-modules-*.rpm")
    served = published_server.settings.data_dir / LATEST.removeprefix("/") / "RPMS" / package.name
    assert hashlib.sha256(package.read_bytes()).digest() == hashlib.sha256(served.read_bytes()).digest()


@pytest.mark.parametrize("definition", ["dib", "repofile"])
def test_gpgcheck_install_of_the_hypervisor_set(
    tmp_path: Path, published_server: RunningServer, definition: str
) -> None:
    if definition == "dib":
        repo = dib_style_repo(published_server)
    else:  # DIB_MLNX_OFED_REPO_FILE: the .repo file the tree itself serves
        repo = httpx.get(f"{published_server.url}{LATEST}/mlnx-ofed.repo").text
    completed = dnf(tmp_path, repo, "install", "mlnx-ofed-hypervisor")
    assert "Importing GPG key" in completed.stdout + completed.stderr
    modules = tmp_path / "installroot" / "lib" / "modules" / TARGET_KERNEL / "extra" / "mlnx-ofa_kernel"
    module = modules / "mlx5_core.ko"
    assert module.is_file()
    with module.open("rb") as handle:
        modinfo = ELFFile(handle).get_section_by_name(".modinfo").data()
    vermagic = next(field for field in modinfo.split(b"\0") if field.startswith(b"vermagic="))
    assert vermagic.decode().removeprefix("vermagic=").split()[0] == TARGET_KERNEL


def test_gpgcheck_is_really_on(tmp_path: Path, published_server: RunningServer) -> None:
    """Control for the install above: with only the site key listed, vendor-signed packages are refused, and
    nothing is installed."""
    repo = dib_style_repo(published_server).replace("RPM-GPG-KEY-Mellanox", "RPM-GPG-KEY-ofedrepo")
    failing = dnf(tmp_path, repo, "install", "mlnx-ofed-hypervisor", succeed=False)
    output = failing.stdout + failing.stderr
    assert re.search(r"Public key for \S+\.rpm is not installed|are not correct for this package", output), output
    assert not (tmp_path / "installroot" / "lib" / "modules").exists()


def test_a_package_altered_on_the_server_is_refused_by_its_checksum(
    tmp_path: Path, published_server: RunningServer
) -> None:
    """A copy of the version whose one package had bytes changed after the metadata was made (a disk or a mirror
    gone bad): dnf refuses the download, so a published version's metadata is what protects its packages."""
    version = published_server.settings.data_dir / LATEST.removeprefix("/")
    copy = tmp_path / "served"
    shutil.copytree(version.resolve(), copy)
    (package,) = (copy / "RPMS").glob("mlnx-ofa_kernel-modules-*.rpm")
    altered = bytearray(package.read_bytes())
    altered[len(altered) // 2] ^= 0xFF
    package.write_bytes(bytes(altered))
    with serve(copy) as url:
        keys = f"{url}RPM-GPG-KEY-Mellanox"
        repo = f"[mlnx_ofed]\nname=MLNX_OFED\nbaseurl={url}RPMS\nenabled=1\ngpgcheck=1\ngpgkey={keys}\n"
        failing = dnf(tmp_path / "dnf", repo, "download", "--destdir", str(tmp_path / "d"), "mlnx-ofa_kernel-modules",
                      succeed=False)  # fmt: skip
    assert "checksum doesn't match" in failing.stdout + failing.stderr, failing.stdout + failing.stderr


def signed_metadata_repo(server: RunningServer, version: str) -> str:
    repo = server.url + LATEST.replace("/latest", f"/{version}")
    return (
        f"[mlnx_ofed]\nname=MLNX_OFED\nbaseurl={repo}/RPMS\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=1\n"
        f"gpgkey={repo}/RPM-GPG-KEY-Mellanox\n"
    )


def test_repodata_signature_is_verified_by_dnf(tmp_path: Path, published_server: RunningServer) -> None:
    repofile = httpx.get(f"{published_server.url}{LATEST}/mlnx-ofed.repo").text
    assert "repo_gpgcheck=1" in repofile
    signature = httpx.get(f"{published_server.url}{LATEST}/RPMS/repodata/repomd.xml.asc")
    assert signature.status_code == 200 and signature.text.startswith("-----BEGIN PGP SIGNATURE-----")
    dnf(tmp_path, signed_metadata_repo(published_server, "latest"), "install", "mlnx-ofed-hypervisor")


def test_tampered_repodata_fails_the_signature_check(tmp_path: Path, published_server: RunningServer) -> None:
    repomd = published_server.settings.data_dir / LATEST.removeprefix("/").replace("latest", "1") / "RPMS"
    repomd = repomd / "repodata" / "repomd.xml"
    original = repomd.read_bytes()
    mode = repomd.stat().st_mode
    try:
        repomd.chmod(0o644)
        repomd.write_bytes(original + b"<!-- changed after signing -->\n")
        failing = dnf(tmp_path, signed_metadata_repo(published_server, "1"), "makecache", succeed=False)
        assert "repomd.xml GPG signature verification error" in failing.stdout + failing.stderr
    finally:
        repomd.write_bytes(original)
        repomd.chmod(mode)
