"""The builder images the container runner uses, checked for structure (no registry can be reached here).

One Containerfile per EL major: an RPM host of the bundle's family with what NVIDIA's script and install.pl
need installed up front (builds run with no network), and no lsb_release (which would switch the script to
DEB mode). `make builder-images` builds them under the names ofedrepo's settings use by default.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ofedrepo.config import DEFAULT_CONTAINER_IMAGES
from tests.support.builder_image import containers_conf

ROOT = Path(__file__).resolve().parents[2]
BASES = {"7": "quay.io/centos/centos", "8": "quay.io/rockylinux/rockylinux", "9": "quay.io/rockylinux/rockylinux"}
#: The minor release each image pins by default (its Containerfile's ``ARG RELEASE``, the Makefile's ``EL<N>_RELEASE``).
PINNED = {"7": "7", "8": "8.10", "9": "9.6"}
#: What the vendor's kernel-only build needs (VENDOR: rpm-build, gcc, make, kernel-rpm-macros, ...).
REQUIRED = ["rpm-build", "gcc", "make", "elfutils-libelf-devel", "autoconf", "automake", "libtool", "python3", "perl"]


def containerfile(release: str) -> str:
    return (ROOT / "builders" / f"el{release}" / "Containerfile").read_text()


def installed(text: str) -> set[str]:
    """Package names the RUN instructions install (continuation lines joined)."""
    joined = text.replace("\\\n", " ")
    packages: set[str] = set()
    for command in re.findall(r"(?:dnf|yum) -y install ([^&]+)", joined):
        packages |= set(command.split())
    return packages


@pytest.mark.parametrize("release", ["7", "8", "9"])
def test_each_builder_is_an_rpm_host_of_its_family_with_the_build_dependencies(release: str) -> None:
    text = containerfile(release)
    assert re.search(rf"^ARG RELEASE={re.escape(PINNED[release])}$", text, re.MULTILINE)  # a minor, never a float
    assert re.search(rf"^FROM {re.escape(BASES[release])}:\$\{{RELEASE\}}$", text, re.MULTILINE)
    packages = installed(text)
    # doca-kernel-support probes for it (and would dnf install it, offline); EL7 has no DOCA-OFED
    assert ("kernel-abi-stablelists" in packages) is (release != "7")
    missing = [package for package in REQUIRED if package not in packages]
    assert not missing, missing
    assert ("createrepo" if release == "7" else "createrepo_c") in packages
    assert ("redhat-rpm-config" if release == "7" else "kernel-rpm-macros") in packages
    assert not any("lsb" in package for package in packages)
    assert re.search(r"(dnf|yum) clean all", text)


def test_the_default_images_are_the_ones_make_builds() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "builder-images", "ENGINE=podman"], cwd=ROOT, capture_output=True, text=True
    )
    built = dict(re.findall(r"-t (\S+) --build-arg RELEASE=(\S+)", dry_run.stdout))
    assert built == {f"localhost/ofedrepo-builder:el{n}": PINNED[n] for n in ("7", "8", "9")}
    assert DEFAULT_CONTAINER_IMAGES == {f"rhel{n}": f"localhost/ofedrepo-builder:el{n}" for n in ("7", "8", "9")}
    for release in ("7", "8", "9"):
        assert (ROOT / "builders" / f"el{release}" / "Containerfile").is_file()


def engine() -> str | None:
    for name in ("podman", "docker"):
        if shutil.which(name) and subprocess.run([name, "info"], capture_output=True).returncode == 0:
            return name
    return None


def test_the_el8_builder_builds(tmp_path: Path) -> None:
    """Where an engine runs and the base image can be pulled; this host's engine reaches no registry."""
    name = engine()
    if name is None:
        pytest.skip("no running podman/docker engine here")
    environment = {**os.environ, "CONTAINERS_CONF": str(containers_conf(tmp_path))}
    base = f"{BASES['8']}:{PINNED['8']}"
    pulled = subprocess.run([name, "pull", base], env=environment, capture_output=True, text=True, timeout=540)
    if pulled.returncode != 0:
        reason = pulled.stderr.strip().splitlines()[-1][:200]
        pytest.skip(f"the base image {base} cannot be pulled here: {reason}")
    subprocess.run(
        [name, "build", "-t", "localhost/ofedrepo-builder:el8", "-f", "builders/el8/Containerfile", "builders/el8"],
        cwd=ROOT, env=environment, check=True, timeout=540,
    )  # fmt: skip
