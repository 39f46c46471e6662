"""A DIB-like image build chroot for the element tests: a debootstrapped minimal root with bash, rpm, dnf
and curl from Debian's packages, made to look like a RHEL-family build root (rpm's database at
``/var/lib/rpm``), with synthetic kernel packages installed in it by its own dnf.

DIB runs an element's in-target phases as ``chroot <root> /tmp/in_target.d/dib-run-parts
/tmp/in_target.d/<phase>.d`` with the merged hooks of every element bind-mounted read-only at
``/tmp/in_target.d`` and ``/proc``, ``/sys`` and ``/dev`` mounted; ``run_phase`` does the same, inside a
private mount namespace so nothing stays mounted when it ends.
"""

import shutil
import subprocess
from pathlib import Path

import diskimage_builder

from synthetic.vendor import install_pl

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("rpm", "dnf", "curl")
DIB_RUN_PARTS = Path(diskimage_builder.__file__).parent / "lib" / "dib-run-parts"

KERNEL_CORE_SPEC = """\
Name: {name}
Version: {version}
Release: {release}
Summary: synthetic kernel for ofedrepo's element tests
License: GPLv2
AutoReqProv: no
Provides: kernel = {version}-{release}
Provides: {uname_provide} = {kernel}

%description
What DIB's bootloader element boots: /boot/vmlinuz-{kernel} and /lib/modules/{kernel}.

%prep
%build
%install
mkdir -p %{{buildroot}}/boot %{{buildroot}}/lib/modules/{kernel}/kernel
echo synthetic > %{{buildroot}}/boot/vmlinuz-{kernel}
echo synthetic > %{{buildroot}}/lib/modules/{kernel}/vmlinuz

%files
/boot/vmlinuz-{kernel}
/lib/modules/{kernel}
"""


def make_kernel_package(
    work: Path, kernel: str, name: str = "kernel-core", uname_provide: str = "kernel-uname-r"
) -> Path:
    """``kernel-core-<K>.rpm`` (rpmbuild), as a RHEL 8 build root installs it; or another kernel package, such as
    EL9's ``kernel-rt-core``, whose version-release.arch leaves out the ``+rt`` its ``kernel-uname-r`` (what
    ``uname -r`` says once it boots) carries (the RHEL 9 kernel.spec's ``Provides: kernel-uname-r``); UEK's
    ``kernel-uek-core`` provides ``kernel-uek-uname-r`` (oracle/linux-uek ``uek-rpm/ol10/kernel-uek.spec``)."""
    version, rest = kernel.split("+", 1)[0].split("-", 1)
    release, arch = rest.rsplit(".", 1)
    topdir = work / f"rpmbuild-{kernel}"
    topdir.mkdir(parents=True)
    spec_file = topdir / f"{name}.spec"
    spec_file.write_text(
        KERNEL_CORE_SPEC.format(name=name, version=version, release=release, kernel=kernel, uname_provide=uname_provide)
    )
    subprocess.run(install_pl.rpmbuild_argv(topdir, "-bb", "--target", arch, str(spec_file)), check=True,
                   capture_output=True)  # fmt: skip
    (package,) = (topdir / "RPMS").rglob("*.rpm")
    return package


def make_build_chroot(root: Path, kernels: list[str]) -> Path:
    """debootstrap ``root`` (about a minute), point rpm at ``/var/lib/rpm`` and dnf-install ``kernels``."""
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR],
        check=True, capture_output=True, timeout=540,  # within pytest's 600 s
    )  # fmt: skip
    # Debian's rpm keeps its database in ~/.rpmdb; a RHEL build root has it here.
    (root / "etc" / "rpm").mkdir(exist_ok=True)
    (root / "etc" / "rpm" / "macros.dbpath").write_text("%_dbpath /var/lib/rpm\n")
    (root / "var" / "lib" / "rpm").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "dnf" / "vars").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "dnf" / "vars" / "releasever").write_text("8\n")
    (root / "etc" / "yum.repos.d").mkdir(parents=True, exist_ok=True)
    incoming = root / "tmp" / "kernels"
    incoming.mkdir()
    for kernel in kernels:
        shutil.copy(make_kernel_package(root.parent / "kernel-packages", kernel), incoming)
    packages = [f"/tmp/kernels/{package.name}" for package in sorted(incoming.iterdir())]
    run_in_chroot(root, ["dnf", "install", "-y", "--nogpgcheck", *packages], timeout=300)
    shutil.rmtree(incoming)
    return root


def _mounts_then(root: Path, hooks: Path | None) -> str:
    """The shell prologue DIB's ``run_d_in_target`` amounts to: the kernel filesystems, the hooks read-only."""
    lines = [
        f"mount -t proc proc {root}/proc",
        f"mount -t sysfs sysfs {root}/sys",
        f"mount --bind /dev {root}/dev",
    ]
    if hooks is not None:
        lines += [
            f"mkdir -p {root}/tmp/in_target.d",
            f"mount --bind {hooks} {root}/tmp/in_target.d",
            f"mount -o remount,ro,bind {root}/tmp/in_target.d",
        ]
    return "\n".join(lines) + '\nexec chroot "$@"\n'


def run_in_chroot(
    root: Path,
    argv: list[str],
    environment: dict[str, str] | None = None,
    hooks: Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``argv`` inside ``root``, in a private mount namespace (its mounts vanish with it)."""
    command = ["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-euc", _mounts_then(root, hooks),
               "sh", str(root), "env", "-u", "TMPDIR", *argv]  # fmt: skip
    base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    return subprocess.run(command, env={**base, **(environment or {})}, capture_output=True, text=True, timeout=timeout)


def stage_hooks(elements: list[Path], destination: Path) -> Path:
    """The merged hooks of ``elements`` and DIB's own ``dib-run-parts``, as DIB lays them out."""
    destination.mkdir(parents=True)
    for element in elements:
        for phase in element.iterdir():
            if phase.is_dir() and phase.name.endswith(".d"):
                shutil.copytree(phase, destination / phase.name, dirs_exist_ok=True)
    shutil.copy(DIB_RUN_PARTS, destination / "dib-run-parts")
    return destination


def run_phase(root: Path, hooks: Path, phase: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``dib-run-parts /tmp/in_target.d/<phase>.d`` inside the chroot, as DIB runs an in-target phase."""
    return run_in_chroot(
        root, ["/tmp/in_target.d/dib-run-parts", f"/tmp/in_target.d/{phase}.d"], environment, hooks=hooks
    )
