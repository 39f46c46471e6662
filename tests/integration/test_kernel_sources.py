"""Kernel-devel from a distro mirror is hostile until its signature says otherwise, and is unpacked by the one safe
extractor: a mirror (plain HTTP, often) can send a package signed by no one, an altered one, one whose links
chain out of the tree with a file written "under" them, or a few KB that unpack to a gigabyte.

Real rpmbuild, rpmsign, createrepo_c and a loopback HTTP mirror; ``KernelSources.find`` as a build calls it.
"""

import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ofedrepo import kept_sources
from ofedrepo.builds.kernel_sources import KernelSources
from ofedrepo.config import MirrorSource, Settings
from ofedrepo.errors import BuildFailed
from ofedrepo.storage import DataDir
from synthetic import bundle as vendor
from synthetic.bundle import make_test_key, sign
from synthetic.vendor.install_pl import rpmbuild_argv
from tests.conftest import make_settings
from tests.support.kernel_feed import serve

KERNEL = "4.18.0-372.32.1.el8_6.x86_64"
SPEC = """\
Name: kernel-devel
Version: {version}
Release: {release}
Summary: kernel sources, as a mirror may send them
License: GPLv2
AutoReqProv: no

%description
kernel sources

%prep
%build
%install
K=%{{buildroot}}/usr/src/kernels/{kernel}
mkdir -p $K/include/config
printf 'KERNELRELEASE = {kernel}\\n' > $K/Makefile
{install}

%files
/usr/src/kernels/{kernel}
"""
#: Twelve ``a`` then twelve ``..``: as text, the kernel tree itself; followed through ``a -> .``, twelve levels
#: above it, the filesystem's root.
CLIMB = "/".join(["a"] * 12 + [".."] * 12)


def kernel_devel(work: Path, install: str = "", payload: str = "w2.xzdio") -> Path:
    """A ``kernel-devel-<KERNEL>`` package whose ``%install`` adds ``install`` (``$K`` is the tree)."""
    version, rest = KERNEL.split("-", 1)
    release, arch = rest.rsplit(".", 1)
    topdir = work / f"rpmbuild-{len(list(work.glob('rpmbuild-*')))}"
    topdir.mkdir(parents=True)
    spec = topdir / "kernel-devel.spec"
    spec.write_text(SPEC.format(version=version, release=release, kernel=KERNEL, install=install))
    argv = rpmbuild_argv(topdir, "--define", f"_binary_payload {payload}", "-bb", "--target", arch, str(spec))
    subprocess.run(argv, check=True, capture_output=True)
    (package,) = (topdir / "RPMS").rglob("*.rpm")
    return package


def mirror_of(package: Path, repo: Path) -> Path:
    """A yum repository holding ``package`` alone, metadata made after it (its checksum matches)."""
    (repo / "Packages").mkdir(parents=True)
    shutil.copy(package, repo / "Packages" / package.name)
    subprocess.run(["createrepo_c", "--quiet", str(repo)], check=True, capture_output=True)
    return repo


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, test_key: vendor.TestKey) -> dict[str, Path]:
    """The distro's key (the tests' signing key) and another one, as armoured files an operator would name."""
    root = tmp_path_factory.mktemp("distro-keys")
    other = make_test_key(root / "other-gnupg", uid="Someone Else <else@example.invalid>")
    files = {"distro": root / "RPM-GPG-KEY-distro", "other": root / "RPM-GPG-KEY-other"}
    files["distro"].write_text(test_key.public_armored)
    files["other"].write_text(other.public_armored)
    return files


@pytest.fixture(scope="module")
def plain_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kernel_devel(tmp_path_factory.mktemp("plain"))


@contextmanager
def sources_from(tmp_path: Path, repo: Path, source: str) -> Iterator[tuple[KernelSources, list[str], DataDir]]:
    with serve(repo) as url:
        settings: Settings = make_settings(tmp_path / "var", f"sqlite:///{tmp_path / 'db'}").model_copy(
            update={"kernel_devel_repos": [MirrorSource.parse(f"{url} {source}")], "kernel_sources_root": tmp_path}
        )
        data = DataDir(settings.data_dir).ensure()
        notes: list[str] = []
        yield KernelSources(settings, data, notes.append), notes, data


def fetch(tmp_path: Path, package: Path, source: str) -> tuple[Path | BuildFailed, list[str], DataDir]:
    """``find`` the kernel's sources in a mirror holding ``package`` alone, configured as ``<url> <source>``."""
    repo = mirror_of(package, tmp_path / "mirror")
    with sources_from(tmp_path, repo, source) as (sources, notes, data):
        try:
            return sources.keep(KERNEL), notes, data
        except BuildFailed as error:
            return error, notes, data


def signed_copy(package: Path, key: vendor.TestKey, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    copy = directory / package.name
    shutil.copy(package, copy)
    sign([copy], key)
    return copy


def test_a_package_signed_by_the_distros_key_is_unpacked(
    tmp_path: Path, plain_package: Path, test_key: vendor.TestKey, keys: dict[str, Path]
) -> None:
    signed = signed_copy(plain_package, test_key, tmp_path / "s")
    found, notes, data = fetch(tmp_path, signed, f"gpgkey={keys['distro']}")
    assert isinstance(found, Path) and (found / "Makefile").is_file(), notes
    assert any("signature of key" in note and "verified" in note for note in notes), notes
    (kept,) = kept_sources.list_kept(data)  # kept, and described without walking the tree
    assert (kept.kernel, kept.package) == (KERNEL, plain_package.name) and kept.size > 0, kept
    assert kept.url.startswith("http://127.0.0.1:") and kept.url.endswith(plain_package.name), kept


@pytest.mark.parametrize("signer", ["nobody", "another key"])
def test_a_package_not_signed_by_the_distros_key_is_refused(
    tmp_path: Path, plain_package: Path, keys: dict[str, Path], signer: str
) -> None:
    package = plain_package
    if signer == "another key":
        other = make_test_key(tmp_path / "impostor", uid="Impostor <impostor@example.invalid>")
        package = signed_copy(plain_package, other, tmp_path / "s")
    found, notes, data = fetch(tmp_path, package, f"gpgkey={keys['distro']} gpgkey={keys['other']}")
    assert isinstance(found, BuildFailed) and "bad signature" in str(found), (found, notes)
    assert not (data.kernel_sources / KERNEL).exists()


def test_a_package_altered_after_signing_is_refused(
    tmp_path: Path, plain_package: Path, test_key: vendor.TestKey, keys: dict[str, Path]
) -> None:
    package = signed_copy(plain_package, test_key, tmp_path / "s")
    altered = bytearray(package.read_bytes())
    altered[-64] ^= 0xFF  # inside the compressed payload; the mirror's metadata is made after, so its checksum holds
    package.write_bytes(bytes(altered))
    found, notes, data = fetch(tmp_path, package, f"gpgkey={keys['distro']}")
    assert isinstance(found, BuildFailed) and "bad signature" in str(found), (found, notes)
    assert not (data.kernel_sources / KERNEL).exists()


def test_gpgcheck_0_takes_an_unsigned_package_and_says_so(tmp_path: Path, plain_package: Path) -> None:
    found, notes, _ = fetch(tmp_path, plain_package, "gpgcheck=0")
    assert isinstance(found, Path) and (found / "Makefile").is_file()
    assert any("signature not checked" in note and "gpgcheck=0" in note for note in notes), notes


def test_a_repository_without_a_key_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="name the distro's key"):
        MirrorSource.parse("https://mirror.example/BaseOS/")
    with pytest.raises(ValueError, match="is not gpgkey=<file> or gpgcheck=0"):
        MirrorSource.parse("https://mirror.example/BaseOS/ gpgcheck=no")
    assert MirrorSource.parse("https://m/ gpgkey=file:///etc/pki/k").gpgkeys[0] == Path("/etc/pki/k")


def test_links_that_resolve_outside_the_tree_are_dropped_never_followed(tmp_path: Path) -> None:
    package = kernel_devel(tmp_path, install=f"ln -s . $K/a\nln -s {CLIMB} $K/b\nln -s include $K/inside")
    found, notes, _ = fetch(tmp_path, package, "gpgcheck=0")
    assert isinstance(found, Path), notes
    assert (found / "a").is_symlink() and (found / "inside").is_symlink()  # links that stay inside are kept
    assert not (found / "b").exists() and not (found / "b").is_symlink()  # resolves to / through a: dropped


def test_a_file_written_under_a_link_that_climbs_out_lands_nowhere(tmp_path: Path) -> None:
    """The old unpacker made ``b`` (a link that reads as inside but resolves to /) and then wrote ``b/<path>``
    through it, anywhere on the host. The package is made with a directory ``c`` and renamed to ``b`` in its
    header and payload (an uncompressed payload: the same bytes in both)."""
    target = tmp_path / "outside"
    target.mkdir()
    relative = str(target).lstrip("/")
    install = f"ln -s . $K/a\nln -s {CLIMB} $K/b\nmkdir -p $K/c/{relative}\necho pwned > $K/c/{relative}/pwned"
    package = kernel_devel(tmp_path, install=install, payload="w.ufdio")
    data = package.read_bytes()
    assert data.count(f"{KERNEL}/c".encode()) >= 2
    package.write_bytes(data.replace(f"{KERNEL}/c".encode(), f"{KERNEL}/b".encode()))
    found, notes, cache = fetch(tmp_path, package, "gpgcheck=0")
    assert isinstance(found, BuildFailed), notes
    assert not (target / "pwned").exists() and not list(target.iterdir())
    assert not (cache.kernel_sources / KERNEL).exists()
    assert not [entry for entry in cache.kernel_sources.iterdir()]  # no half tree either


def test_a_few_kb_claiming_a_gigabyte_are_refused_without_reading_it_into_memory(tmp_path: Path) -> None:
    package = kernel_devel(tmp_path, install="truncate -s 1G $K/zeros", payload="w3.zstdio")
    assert package.stat().st_size < 2 * 1024 * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    found, notes, cache = fetch(tmp_path, package, "gpgcheck=0")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert isinstance(found, BuildFailed) and "unpacks to more than" in str(found), (found, notes)
    assert grown_kib < 256 * 1024, f"memory grew by {grown_kib} KiB"
    assert not (cache.kernel_sources / KERNEL).exists()
    assert os.statvfs(tmp_path).f_bavail > 0
