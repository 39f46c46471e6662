#!/bin/bash
''':'
exec /usr/bin/env python3 "$0" "$@"
'''

# A synthetic stand-in for NVIDIA's mlnx_add_kernel_support.sh, shipped inside the test bundles that
# tests/support/synthetic_bundle.py generates. It honours the vendor script's command line and output
# contract: it rebuilds the bundle's kernel packages from SRPMS/ against `-k <kernel>` with rpmbuild,
# regenerates the metadata packages, and writes `<tmpdir>/MLNX_OFED_LINUX-<ver>-<distro>-<arch>-ext.tgz`
# (with --make-tgz). Like the real one it refuses to work without kernel sources, and it leaves the rebuilt
# packages unsigned. The file is a bash/Python polyglot so that both `bash mlnx_add_kernel_support.sh` and
# executing it directly work, as they do with the vendor's script.
#
# The same file is the SOURCE0 of the kernel-module source packages: `--write-kernel-module` writes a real
# ELF relocatable object whose `.modinfo` section carries `vermagic=<kernel> ...`.
import argparse
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

#: Source packages in SRPMS/ and the kernel modules each one builds.
KERNEL_SOURCES = {
    "mlnx-ofa_kernel": ["mlx5_core", "mlx5_ib", "ib_core", "ib_uverbs", "mlx_compat"],
    "knem": ["knem"],
}
#: Metadata packages and what they pull in (the kernel package for the target kernel among them).
METADATA_PACKAGES = {
    "mlnx-ofed-hypervisor": ["kmod-mlnx-ofa_kernel", "mlnx-ofa_kernel", "libibverbs", "rdma-core", "mlnx-tools"],
    "mlnx-ofed-basic": ["kmod-mlnx-ofa_kernel", "mlnx-ofa_kernel", "libibverbs", "rdma-core", "ofed-scripts"],
    "mlnx-ofed-all": ["kmod-mlnx-ofa_kernel", "kmod-knem", "knem", "mlnx-ofa_kernel", "libibverbs", "rdma-core",
                      "mlnx-tools", "ofed-scripts", "mlnx-fw-updater"],
}  # fmt: skip


def kernel_module(name: str, kernel: str) -> bytes:
    """An ELF64 little-endian x86-64 relocatable object (what a .ko is) with a `.modinfo` section."""
    modinfo = f"license=Dual BSD/GPL\0name={name}\0vermagic={kernel} SMP mod_unload modversions \0".encode()
    text = b"\xc3"  # a lone `ret`, so the object has code like any module
    shstrtab = b"\0.text\0.modinfo\0.shstrtab\0"
    header_size, section_header_size = 64, 64
    text_offset = header_size
    modinfo_offset = text_offset + len(text)
    shstrtab_offset = modinfo_offset + len(modinfo)
    section_headers_offset = (shstrtab_offset + len(shstrtab) + 7) & ~7
    elf_header = struct.pack(
        "<4sBBBBB7xHHIQQQIHHHHHH",
        b"\x7fELF", 2, 1, 1, 0, 0,  # 64-bit, little endian, version 1, System V ABI
        1, 62, 1, 0, 0, section_headers_offset,  # ET_REL, EM_X86_64, version, entry, phoff, shoff
        0, header_size, 0, 0, section_header_size, 4, 3,  # flags, sizes, 4 sections, shstrndx 3
    )  # fmt: skip

    def section(name_offset: int, kind: int, flags: int, offset: int, size: int, align: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name_offset, kind, flags, 0, offset, size, 0, 0, align, 0)

    sections = [
        bytes(section_header_size),
        section(1, 1, 0x6, text_offset, len(text), 16),  # .text: PROGBITS, ALLOC|EXECINSTR
        section(7, 1, 0x2, modinfo_offset, len(modinfo), 1),  # .modinfo: PROGBITS, ALLOC
        section(16, 3, 0, shstrtab_offset, len(shstrtab), 1),  # .shstrtab: STRTAB
    ]
    body = elf_header + text + modinfo + shstrtab
    return body + bytes(section_headers_offset - len(body)) + b"".join(sections)


KERNEL_SPEC = """\
%{{!?KVERSION: %global KVERSION %(uname -r)}}
%{{!?VERMAGIC: %global VERMAGIC %{{KVERSION}}}}
%global kver_release %(echo %{{KVERSION}} | tr - _)
%{{!?kmod_release: %global kmod_release OFED.{ofed_release}.kver.%{{kver_release}}}}
Name: {name}
Version: {version}
Release: %{{kmod_release}}
Summary: {name} kernel modules (synthetic MLNX_OFED test package)
License: GPLv2
Source0: mlnx_add_kernel_support.sh
AutoReqProv: no

%description
Synthetic {name} for ofedrepo tests.

%package -n kmod-{name}
Summary: {name} kernel modules for %{{KVERSION}}
Requires: {name} = %{{version}}-%{{release}}

%description -n kmod-{name}
{name} kernel modules built for %{{KVERSION}}.

%prep
%build
%install
mkdir -p %{{buildroot}}/etc/{name}
echo "kernel=%{{KVERSION}}" > %{{buildroot}}/etc/{name}/{name}.conf
for module in {modules}; do
    python3 %{{SOURCE0}} --write-kernel-module \\
        %{{buildroot}}/lib/modules/%{{KVERSION}}/extra/{name}/$module.ko $module %{{VERMAGIC}}
done

%files
/etc/{name}

%files -n kmod-{name}
/lib/modules/%{{KVERSION}}/extra/{name}
"""

METADATA_SPEC_HEAD = """\
Name: mlnx-ofed-metadata
Version: {version}
Release: {release}
Summary: MLNX_OFED metadata packages (synthetic)
License: GPLv2
BuildArch: noarch
AutoReqProv: no

%description
Synthetic metadata packages for ofedrepo tests.
"""

METADATA_SUBPACKAGE = """
%package -n {name}
Summary: {name} (synthetic MLNX_OFED metadata package)
{requires}

%description -n {name}
Installs the {name} package set.

%files -n {name}
"""


def rpmbuild_argv(topdir: Path, *arguments: str) -> list[str]:
    """rpmbuild with everything that would make it depend on the host spelled out."""
    return [
        "rpmbuild", "--define", f"_topdir {topdir}", "--define", "__os_install_post %{nil}",
        "--define", "debug_package %{nil}", "--define", "_build_id_links none",
        "--define", f"_dbpath {topdir}/rpmdb", "--nodeps", *arguments,
    ]  # fmt: skip


def run(argv: list[str], log: Path) -> None:
    with log.open("a") as handle:
        handle.write("+ " + " ".join(argv) + "\n")
        handle.flush()
        completed = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if completed.returncode != 0:
        print(f"Failed command: {' '.join(argv)}\nSee {log}", file=sys.stderr)
        sys.exit(1)


def build_kernel_packages(
    srpms: list[Path],
    kernel: str,
    arch: str,
    out: Path,
    log: Path,
    kmod_release: str | None = None,
    vermagic: str | None = None,
) -> list[Path]:
    """Rebuild each kernel source package for `kernel`; return the binary packages.

    The modules' vermagic is the kernel release of the sources they are built against, as with kbuild (the
    tree's include/config/kernel.release): sources of another kernel give modules that load nowhere.
    """
    topdir = Path(tempfile.mkdtemp(prefix="rpmbuild-", dir=out))
    arguments = ["--rebuild", "--target", arch, "--define", f"KVERSION {kernel}"]
    arguments += ["--define", f"VERMAGIC {vermagic or kernel}"]
    if kmod_release:
        arguments += ["--define", f"kmod_release {kmod_release}"]
    for srpm in srpms:
        run(rpmbuild_argv(topdir, *arguments, str(srpm)), log)
    built = sorted((topdir / "RPMS").rglob("*.rpm"))
    for package in built:
        shutil.move(package, out / package.name)
    shutil.rmtree(topdir)
    return [out / package.name for package in built]


def build_metadata_packages(
    version: str, release: str, kmod_requires: dict[str, str], skipped: set[str], out: Path, log: Path
) -> list[Path]:
    """The mlnx-ofed-* metadata packages; kernel packages are required at their exact version-release."""
    topdir = Path(tempfile.mkdtemp(prefix="rpmbuild-", dir=out))
    spec = METADATA_SPEC_HEAD.format(version=version, release=release)
    for name, requires in METADATA_PACKAGES.items():
        lines = []
        for required in requires:
            if required.removeprefix("kmod-") in skipped:
                continue
            exact = kmod_requires.get(required)
            lines.append(f"Requires: {required} = {exact}" if exact else f"Requires: {required}")
        spec += METADATA_SUBPACKAGE.format(name=name, requires="\n".join(lines))
    spec_file = topdir / "metadata.spec"
    topdir.mkdir(exist_ok=True)
    spec_file.write_text(spec)
    run(rpmbuild_argv(topdir, "-bb", str(spec_file)), log)
    built = sorted((topdir / "RPMS").rglob("*.rpm"))
    for package in built:
        shutil.move(package, out / package.name)
    shutil.rmtree(topdir)
    return [out / package.name for package in built]


def package_name(path: Path) -> str:
    output = subprocess.run(
        ["rpm", "-qp", "--nosignature", "--nodigest", "--qf", "%{NAME}", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return output.stdout


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mlnx_add_kernel_support.sh",
        description="Add kernel support to an MLNX_OFED_LINUX bundle (rebuild its kernel packages).",
    )
    parser.add_argument("-m", "--mlnx_ofed", required=True, help="Path to the MLNX_OFED_LINUX directory")
    parser.add_argument("-k", "--kernel", default=os.uname().release, help="Kernel version to build for")
    parser.add_argument("-s", "--kernel-sources", help="Path to the kernel sources (/lib/modules/<k>/build)")
    parser.add_argument("-t", "--tmpdir", default="/tmp", help="Directory for the output")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-y", "--yes", action="store_true", help="Answer yes to the question")
    parser.add_argument("-n", "--name", help="Name of the output package")
    parser.add_argument("--make-tgz", action="store_true", help="Create a TGZ instead of an ISO")
    parser.add_argument("--skip-repo", action="store_true", help="Do not create a repository in the output")
    parser.add_argument("--distro", help="The distro tag of the bundle (e.g. rhel8.6)")
    parser.add_argument("--kmp", action="store_true", help="Build KMP packages where supported")
    parser.add_argument("--force", action="store_true")
    known, unknown = parser.parse_known_args(argv)
    known.without = []
    for argument in unknown:
        if argument.startswith("--without-"):
            known.without.append(argument.removeprefix("--without-"))
        else:
            parser.error(f"unrecognized option {argument}")
    return known


def main(argv: list[str]) -> int:
    if argv[:1] == ["--write-kernel-module"]:
        path, name, kernel = argv[1:4]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(kernel_module(name, kernel))
        return 0
    arguments = parse_arguments(argv)
    bundle = Path(arguments.mlnx_ofed).resolve()
    if not (bundle / ".mlnx").is_file():
        print(f"Error: {bundle} is not an MLNX_OFED_LINUX directory", file=sys.stderr)
        return 1
    version = (bundle / ".mlnx").read_text().strip()
    distro = (bundle / "distro").read_text().strip()
    arch = (bundle / ".arch").read_text().strip()
    if arguments.distro and arguments.distro != distro:
        print(f"Error: bundle is for {distro}, not {arguments.distro}", file=sys.stderr)
        return 1
    kernel = arguments.kernel
    sources = Path(arguments.kernel_sources or f"/lib/modules/{kernel}/build")
    tmpdir = Path(arguments.tmpdir).resolve()
    name = f"MLNX_OFED_LINUX-{version}-{distro}-{arch}"
    print(f"Note: This program will create MLNX_OFED_LINUX TGZ for {distro} under {tmpdir} directory.")
    if not arguments.yes:
        answer = input("Do you want to continue?[y/N]:")
        if answer.strip().lower() not in ("y", "yes"):
            return 1
    if not (sources / "Makefile").is_file():
        print(f"Error: Kernel sources directory {sources} not found or not configured "
              "(install kernel-devel for the target kernel, or pass -s)", file=sys.stderr)  # fmt: skip
        return 1
    if not arguments.make_tgz:
        print("Error: creating an ISO needs mkisofs; use --make-tgz", file=sys.stderr)
        return 1
    if shutil.which("rpmbuild") is None:
        print("Error: rpmbuild is required (install rpm-build)", file=sys.stderr)
        return 1
    release_file = sources / "include" / "config" / "kernel.release"
    vermagic = release_file.read_text().strip() if release_file.is_file() else kernel
    # Test hook: kernel sources may ask for a slow build, so that tests can watch, cancel or kill one mid-way.
    delay_file = sources / ".synthetic-build-delay"
    delay = float(delay_file.read_text()) if delay_file.is_file() else 0.0
    tmpdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"mlnx_iso.{os.getpid()}_", dir=tmpdir))
    log = work / f"mlnx_ofed_iso.{os.getpid()}.log"
    log.touch()
    print(f"See log file {log}\n")
    print("Checking if all needed packages are installed...")
    print("Building MLNX_OFED_LINUX RPMS . Please wait...", flush=True)
    for second in range(int(delay)):
        print(f"  compiling kernel modules against {sources} ({second + 1}/{int(delay)} s)", flush=True)
        time.sleep(1)
    skipped = set(arguments.without)
    srpms = [
        srpm for srpm in sorted((bundle / "SRPMS").glob("*.src.rpm"))
        if package_name(srpm) in KERNEL_SOURCES and package_name(srpm) not in skipped
    ]  # fmt: skip
    built_dir = work / "built"
    built_dir.mkdir()
    kernel_packages = build_kernel_packages(srpms, kernel, arch, built_dir, log, vermagic=vermagic)
    replaced = {package_name(package) for package in kernel_packages}
    kmod_requires = {}
    for package in kernel_packages:
        output = subprocess.run(
            ["rpm", "-qp", "--nosignature", "--nodigest", "--qf", "%{NAME} %{VERSION}-%{RELEASE}", str(package)],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        kmod_requires[output[0]] = output[1]
    print(f"Creating metadata-rpms for {kernel} ...")
    metadata_release = "OFED." + version.replace("-", ".") + ".kver." + kernel.replace("-", "_")
    metadata = build_metadata_packages(version.split("-")[0], metadata_release, kmod_requires, skipped, built_dir, log)
    replaced |= set(METADATA_PACKAGES)
    replaced |= {source for source in KERNEL_SOURCES if source in skipped}
    replaced |= {f"kmod-{source}" for source in KERNEL_SOURCES if source in skipped}

    output_dir = tmpdir / f"{name}-ext"
    if output_dir.exists():
        shutil.rmtree(output_dir)
    shutil.copytree(bundle, output_dir, symlinks=True)
    for package in (output_dir / "RPMS").glob("*.rpm"):
        if package_name(package) in replaced:
            package.unlink()
    for package in kernel_packages + metadata:
        shutil.copy2(package, output_dir / "RPMS" / package.name)
    print("WARNING: If you are going to configure this package as a repository, then please note")
    print("WARNING: that it contains unsigned rpms, therefore, you need to disable GPG check by")
    print("WARNING: adding 'gpgcheck=0' to the repository conf file.")
    archive = tmpdir / f"{name}-ext.tgz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(output_dir, arcname=output_dir.name)
    shutil.rmtree(output_dir)
    shutil.rmtree(built_dir)
    print(f"Created {archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
