"""A synthetic MLNX_OFED bundle with the real layout, built with real rpmbuild and rpmsign.

    MLNX_OFED_LINUX-<ver>-<distro>-<arch>/
        .mlnx  .arch  distro  LICENSE  mlnxofedinstall  RPM-GPG-KEY-Mellanox
        mlnx_add_kernel_support.sh         the synthetic script (fake_mlnx_add_kernel_support.py)
        RPMS/*.rpm                          userland, kernel packages for the GA kernel, metadata packages,
                                            all signed with a throwaway key shipped as RPM-GPG-KEY-Mellanox
        RPMS/repodata/                      deliberately stale: publishers must regenerate it
        SRPMS/<kernel sources>.src.rpm      what add-kernel-support rebuilds

Kernel packages install real ELF `.ko` objects under /lib/modules/<K>/extra/ with `.modinfo` vermagic.
"""

import io
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pycdlib

from tests.support import fake_mlnx_add_kernel_support as script

SCRIPT_SOURCE = Path(script.__file__)

NAMED_USERLAND = [
    "libibverbs", "rdma-core", "librdmacm", "libibumad", "infiniband-diags", "mlnx-tools", "ofed-scripts",
    "ucx", "perftest", "mlnx-fw-updater", "mstflint", "mlnx-iproute2",
]  # fmt: skip

USERLAND_SPEC_HEAD = """\
Name: {first}
Version: {version}
Release: 1.{release}
Summary: synthetic MLNX_OFED userland package
License: GPLv2
AutoReqProv: no

%description
Synthetic userland package for ofedrepo tests.

%prep
%build
%install
for name in {names}; do
    mkdir -p %{{buildroot}}/usr/share/mlnx-ofed/$name
    echo "$name {version}" > %{{buildroot}}/usr/share/mlnx-ofed/$name/README
done

%files
/usr/share/mlnx-ofed/{first}
"""

USERLAND_SUBPACKAGE = """
%package -n {name}
Summary: synthetic MLNX_OFED userland package {name}

%description -n {name}
Synthetic userland package {name}.

%files -n {name}
/usr/share/mlnx-ofed/{name}
"""


@dataclass(frozen=True)
class BundleSpec:
    ofed_version: str = "5.8-3.0.7.0"
    distro: str = "rhel8.6"
    arch: str = "x86_64"
    ga_kernel: str = "4.18.0-372.9.1.el8_6.x86_64"
    userland_packages: int = len(NAMED_USERLAND)

    @property
    def name(self) -> str:
        return f"MLNX_OFED_LINUX-{self.ofed_version}-{self.distro}-{self.arch}"

    @property
    def rhel_release(self) -> str:
        """``rhel8u6`` for ``rhel8.6``: how MLNX_OFED marks packages built for a GA kernel."""
        return self.distro.replace(".", "u")


@dataclass(frozen=True)
class TestKey:
    gnupg_home: Path
    fingerprint: str
    public_armored: str


def tool_environment(gnupg_home: Path | None = None) -> dict[str, str]:
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(gnupg_home or "/nonexistent")}
    if gnupg_home is not None:
        environment["GNUPGHOME"] = str(gnupg_home)
    return environment


def make_test_key(home: Path, uid: str = "Synthetic Mellanox Technologies <support@example.invalid>") -> TestKey:
    home.mkdir(mode=0o700, parents=True)
    gpg = ["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
    environment = tool_environment(home)
    subprocess.run([*gpg, "--quick-gen-key", uid, "rsa2048", "sign", "never"], env=environment, check=True,
                   capture_output=True)  # fmt: skip
    listing = subprocess.run([*gpg, "--with-colons", "--list-secret-keys"], env=environment, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    public = subprocess.run([*gpg, "--armor", "--export", fingerprint], env=environment, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    return TestKey(gnupg_home=home, fingerprint=fingerprint, public_armored=public)


def sign(packages: list[Path], key: TestKey) -> None:
    subprocess.run(
        ["rpmsign", "--define", "__gpg /usr/bin/gpg", "--define", f"_gpg_name {key.fingerprint}",
         "--addsign", *map(str, packages)],
        env=tool_environment(key.gnupg_home), check=True, capture_output=True,
    )  # fmt: skip


def userland_names(count: int) -> list[str]:
    names = NAMED_USERLAND[:count]
    names += [f"ofed-extra-{index:03d}" for index in range(count - len(names))]
    return names


def make_bundle(spec: BundleSpec, key: TestKey, parent: Path) -> Path:
    """Build the bundle directory ``parent/<spec.name>`` and return it."""
    bundle = parent / spec.name
    rpms, srpms = bundle / "RPMS", bundle / "SRPMS"
    for directory in (rpms / "repodata", srpms):
        directory.mkdir(parents=True)
    work = parent / f".work-{spec.name}"
    work.mkdir()
    log = work / "build.log"
    version = spec.ofed_version.split("-")[0]
    ofed_release = spec.ofed_version.replace("-", ".")

    # Kernel source packages, whose SOURCE0 is the synthetic script (it writes the .ko files).
    topdir = work / "srpm"
    (topdir / "SOURCES").mkdir(parents=True)
    shutil.copy(SCRIPT_SOURCE, topdir / "SOURCES" / "mlnx_add_kernel_support.sh")
    for name, modules in script.KERNEL_SOURCES.items():
        spec_file = topdir / f"{name}.spec"
        spec_file.write_text(script.KERNEL_SPEC.format(
            name=name, version=version, ofed_release=ofed_release, modules=" ".join(modules)
        ))  # fmt: skip
        script.run(script.rpmbuild_argv(topdir, "-bs", "--define", f"kmod_release OFED.{ofed_release}",
                                        str(spec_file)), log)  # fmt: skip
    for srpm in (topdir / "SRPMS").glob("*.src.rpm"):
        shutil.move(srpm, srpms / srpm.name)

    # Userland packages, all from one spec so one rpmbuild makes them.
    names = userland_names(spec.userland_packages)
    userland_spec = USERLAND_SPEC_HEAD.format(
        first=names[0], version=version, release=ofed_release, names=" ".join(names)
    ) + "".join(USERLAND_SUBPACKAGE.format(name=name) for name in names[1:])
    userland_top = work / "userland"
    userland_top.mkdir()
    (userland_top / "userland.spec").write_text(userland_spec)
    script.run(script.rpmbuild_argv(userland_top, "-bb", "--target", spec.arch,
                                    str(userland_top / "userland.spec")), log)  # fmt: skip
    for package in (userland_top / "RPMS").rglob("*.rpm"):
        shutil.move(package, rpms / package.name)

    # Kernel and metadata packages for the distro's GA kernel, as NVIDIA ships them.
    kmod_release = f"OFED.{ofed_release}.{spec.rhel_release}"
    kernel_packages = script.build_kernel_packages(
        sorted(srpms.glob("*.src.rpm")), spec.ga_kernel, spec.arch, rpms, log, kmod_release=kmod_release
    )
    exact = {script.package_name(package): f"{version}-{kmod_release}" for package in kernel_packages}
    script.build_metadata_packages(version, kmod_release, exact, set(), rpms, log)
    sign(sorted(rpms.glob("*.rpm")), key)

    (rpms / "repodata" / "repomd.xml").write_text("<repomd><!-- stale metadata from the vendor --></repomd>\n")
    (bundle / ".mlnx").write_text(spec.ofed_version + "\n")
    (bundle / "distro").write_text(spec.distro + "\n")
    (bundle / ".arch").write_text(spec.arch + "\n")
    (bundle / "LICENSE").write_text("Synthetic test bundle; not NVIDIA software.\n")
    (bundle / "mlnxofedinstall").write_text("#!/bin/sh\necho 'synthetic bundle: nothing to install'\n")
    (bundle / "RPM-GPG-KEY-Mellanox").write_text(key.public_armored)
    installed_script = bundle / "mlnx_add_kernel_support.sh"
    shutil.copy(SCRIPT_SOURCE, installed_script)
    installed_script.chmod(0o755)
    shutil.rmtree(work)
    return bundle


def make_kernel_sources(root: Path, kernel: str, release: str | None = None, build_seconds: int = 0) -> Path:
    """A stand-in for /usr/src/kernels/<K>: a Makefile (the script checks it, as kbuild would) and
    include/config/kernel.release, whose release (``release``, default ``kernel``) the modules' vermagic takes.
    ``build_seconds`` makes the synthetic script take that long, printing a line a second."""
    sources = root / kernel
    (sources / "include" / "config").mkdir(parents=True, exist_ok=True)
    (sources / "Makefile").write_text(f"# kernel {kernel}\nKERNELRELEASE = {release or kernel}\n")
    (sources / "include" / "config" / "kernel.release").write_text(f"{release or kernel}\n")
    if build_seconds:
        (sources / ".synthetic-build-delay").write_text(str(build_seconds))
    return sources


def add_kernel_support(bundle: Path, kernel: str, sources: Path, tmpdir: Path, *extra: str) -> Path:
    """Run the bundle's own script as a user would; return the ``-ext.tgz`` it writes."""
    subprocess.run(
        [str(bundle / "mlnx_add_kernel_support.sh"), "-m", str(bundle), "-k", kernel, "-s", str(sources),
         "--make-tgz", "-t", str(tmpdir), "-y", "--skip-repo", *extra],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return tmpdir / f"{bundle.name}-ext.tgz"


def make_tgz(directory: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(directory, arcname=directory.name)
    return archive


def make_iso(directory: Path, iso_path: Path) -> Path:
    """An ISO 9660 image with Rock Ridge names, the way MLNX_OFED ISOs are made."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=4, rock_ridge="1.09", vol_ident="MLNX_OFED")
    iso_names = {directory.parent: ""}
    for index, path in enumerate([directory, *sorted(directory.rglob("*"))]):
        iso_name = f"{iso_names[path.parent]}/N{index:07d}"
        iso_names[path] = iso_name
        if path.is_dir():
            iso.add_directory(iso_name, rr_name=path.name)
        else:
            data = path.read_bytes()
            iso.add_fp(io.BytesIO(data), len(data), iso_name + ";1", rr_name=path.name)
    iso.write(str(iso_path))
    iso.close()
    return iso_path


KERNEL_DEVEL_SPEC = """\
Name: kernel-devel
Version: {version}
Release: {release}
Summary: synthetic kernel sources for ofedrepo tests
License: GPLv2
AutoReqProv: no

%description
What add-kernel-support builds against: /usr/src/kernels/{kernel}.

%prep
%build
%install
mkdir -p %{{buildroot}}/usr/src/kernels/{kernel}/include/config
printf '# kernel {kernel}\\nKERNELRELEASE = {kernel}\\n' > %{{buildroot}}/usr/src/kernels/{kernel}/Makefile
echo {kernel} > %{{buildroot}}/usr/src/kernels/{kernel}/include/config/kernel.release

%files
/usr/src/kernels/{kernel}
"""


def make_kernel_devel_repo(repo: Path, kernel: str) -> Path:
    """A yum repository (rpmbuild + createrepo_c) holding ``kernel-devel-<kernel>``, as a distro mirror has it."""
    version, rest = kernel.split("-", 1)
    release, arch = rest.rsplit(".", 1)
    work = repo.parent / f"{repo.name}-rpmbuild"
    work.mkdir(parents=True)
    spec_file = work / "kernel-devel.spec"
    spec_file.write_text(KERNEL_DEVEL_SPEC.format(version=version, release=release, kernel=kernel))
    subprocess.run(script.rpmbuild_argv(work, "-bb", "--target", arch, str(spec_file)), check=True,
                   capture_output=True)  # fmt: skip
    (repo / "Packages").mkdir(parents=True)
    for package in (work / "RPMS").rglob("*.rpm"):
        shutil.move(package, repo / "Packages" / package.name)
    subprocess.run(["createrepo_c", "--quiet", str(repo)], check=True, capture_output=True)
    return repo
