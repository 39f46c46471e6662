#!/bin/bash
''':'
exec /usr/bin/env python3 "$0" "$@"
'''

# A model of NVIDIA's /opt/mellanox/doca/tools/doca-kernel-support (doca-extra), installed as the synthetic
# DOCA repositories' tool. What it does, as the public sources show the real one (doca-extra 2607.0.10 read
# line by line by rollandf/doca-driver-build, docs/install-pl-deprecation-plan.md; xcat2/confluent-docs):
#
# - options `-o dhKk:s:t:v` plus `--dirty --no-kver --sign-rpm` and long forms; `--kernel-source` is declared
#   without an argument, so `--kernel-source DIR` leaves DIR as a stray argument: usage, exit 1;
# - runs /opt/mellanox/doca/tools/get_mlnx_ofed_version first (set -e: missing, it fails at once); its
#   resources are at the absolute RES_FOLDER=/opt/mellanox/doca/tools/resources, the sources by default
#   ${RES_FOLDER}/MLNX_OFED_*.tgz, `-t TARFILE` instead;
# - `-k K` builds against /lib/modules/K/build, which EL9's kernel-devel does not make, so without it:
#   "Could not determine kernel version from source directory"; `-s SRC` takes the tree and its release;
# - DISTRO comes from /etc/os-release (ID:VERSION_ID), with no override; the KMP dist tag is made from it
#   (`.rhel9u6`, `.almalinux9u8`; on any other ID the same rule: `.debian12`), except in DOCA 2.10 and 3.0,
#   whose rpmbuild defines no `_dist` (xcat2/confluent-docs `doca3-0-install.md` patches it in);
# - checks its build dependencies with `rpm -q --whatprovides` and `dnf install`s the missing ones, which
#   fails offline;
# - `TOP_DIR=$(mktemp -d /tmp/DOCA.XXXXXXXXXX)`, announced as "Building under <dir>"; the sources are untarred
#   there and each component of rpm_rebuild_modules, in its order, is built from SRPMS/<c>-[0-9]*.src.rpm
#   with `rpmbuild --rebuild --define "KVERSION K" --define "_kmp_build_num .1" --define "K_SRC SRC"
#   --define "KMP 1"` (KMP is forced on RHEL; the `.1` sorts the result above the stock kmods), its output
#   in one log per component (TOP_DIR/logs/<c>.log); an absent one prints "Missing package <c>, skipping";
#   a failure names the log and stops, unless -K; on RHEL, redhat-rpm-config turns `_enable_debug_packages`
#   on, so each component also makes its -debuginfo and -debugsource (§11.6 of the plan: "Debug packages are
#   now in the harvest", 47 MB for mlnx-ofa_kernel; this model defines the macro as that builder would);
# - every package built goes to TOP_DIR/packages/<K>/<c>/, debug ones included (§11.6); a noarch
#   `doca-kernel-<K'>` metapackage (K' is K with '-' and '_' made '.') requires the kmods but those of
#   mlnx-nvme, mlnx-nfsrdma and fwctl;
#   together they become a yum repository, wrapped in TOP_DIR/doca-kernel-repo-<ofed, dotted>-1.kver.<K'>.
#   <arch>.rpm, which installs /usr/share/doca-host-<ver>/Modules/<K>/ and /etc/yum.repos.d/doca-kernel-
#   <K>.repo; without --dirty the loose packages are removed, the wrapper and the logs stay;
# - module signing when WITH_MOD_SIGN=1 and MODULE_SIGN_PRIV_KEY/MODULE_SIGN_PUB_KEY name files (the spec
#   signs).
#
# Deliberate differences, for a Debian test host: the real tool would take the deb path there (this one
# always builds RPMs); it asks rpm's default database, which on RHEL is /var/lib/rpm and which Debian's rpm
# moves to ~/.rpmdb, so this one names /var/lib/rpm; and Debian names the createrepo of RHEL createrepo_c.
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCA_VERSION = "0.0.0"  # the factory writes the DOCA release this copy belongs to
SETS_DIST = True  # False for DOCA 2.10 and 3.0, whose rpmbuild line defines no _dist (synthetic/doca.py)
TOOLS = Path("/opt/mellanox/doca/tools")
RES_FOLDER = TOOLS / "resources"
RPM_REBUILD_MODULES = [
    "mlnx-ofa_kernel", "iser", "isert", "srp", "mlnx-nfsrdma", "mlnx-nvme", "virtiofs", "fwctl", "knem", "xpmem",
    "kernel-mft",
]  # fmt: skip
NOT_IN_METAPACKAGE = ("mlnx-nvme", "mlnx-nfsrdma", "fwctl")
BUILD_DEPENDENCIES = [  # rpm_install_build_deps (rollandf/doca-driver-build poc/dks/run-rhel.sh)
    "createrepo_c", "rpm-build", "gcc", "autoconf", "automake", "libtool", "elfutils-libelf-devel", "binutils",
    "kernel-headers", "kernel-rpm-macros", "kernel-abi-stablelists",
]  # fmt: skip
RPM_DATABASE = "/var/lib/rpm"
SHORT = {
    "-d": "dry-run",
    "-h": "help",
    "-K": "keep-going",
    "-k": "kernel",
    "-s": None,
    "-t": "tarfile",
    "-v": "verbose",
}
TAKES_ARGUMENT = {"-k", "-s", "-t", "--kernel", "--tarfile"}
LONG = {"--dirty", "--no-kver", "--sign-rpm", "--kernel-source", "--dry-run", "--help", "--keep-going", "--verbose"}


def usage() -> int:
    print(
        "Usage: doca-kernel-support [-k|--kernel <kernel version>] [-s <kernel source dir>] [-t|--tarfile <tgz>]\n"
        "                           [-K|--keep-going] [--dirty] [--no-kver] [--sign-rpm] [-d|--dry-run] [-v] [-h]"
    )
    return 1


def os_release() -> dict[str, str]:
    values = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("\"'")
    return values


def rpmbuild(topdir: Path, *arguments: str) -> list[str]:
    return [
        "rpmbuild", "--define", f"_topdir {topdir}", "--define", f"_dbpath {topdir}/rpmdb",
        "--define", "__os_install_post %{nil}", "--define", "_build_id_links none", "--nodeps", *arguments,
    ]  # fmt: skip


def install_build_dependencies(dry_run: bool) -> bool:
    missing = [
        name
        for name in BUILD_DEPENDENCIES
        if subprocess.run(
            ["rpm", "--dbpath", RPM_DATABASE, "-q", "--whatprovides", name], capture_output=True
        ).returncode
    ]
    if not missing:
        return True
    print(f"Installing missing build dependencies: {' '.join(missing)}", flush=True)
    if dry_run:
        return True
    completed = subprocess.run(["dnf", "install", "-y", *missing], stdout=sys.stdout, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        print(f"ERROR: failed to install build dependencies: {' '.join(missing)}", flush=True)
        return False
    return True


def kernel_release(source: Path) -> str | None:
    """`make -s -C SRC kernelrelease`, as the real tool asks the tree (its `-s` handling)."""
    if not (source / "Makefile").is_file():
        return None
    asked = subprocess.run(["make", "-s", "-C", str(source), "kernelrelease"], capture_output=True, text=True)
    return asked.stdout.strip() or None if asked.returncode == 0 else None


def main(argv: list[str]) -> int:
    kernel = source = tarfile = None
    dirty = keep_going = dry_run = verbose = no_kver = False
    arguments = list(argv)
    while arguments:
        option = arguments.pop(0)
        name = SHORT.get(option, option.removeprefix("--")) if option.startswith("-") else None
        if option not in SHORT and option not in LONG and option not in TAKES_ARGUMENT:
            print(f"doca-kernel-support: unrecognized option or argument '{option}'")
            return usage()
        value = None
        if option in TAKES_ARGUMENT:
            if not arguments:
                print(f"doca-kernel-support: option '{option}' requires an argument")
                return usage()
            value = arguments.pop(0)
        if option == "-s":
            source = Path(value or "")
        elif name == "kernel":
            kernel = value
        elif name == "tarfile":
            tarfile = Path(value or "")
        elif name == "dirty":
            dirty = True
        elif name == "keep-going":
            keep_going = True
        elif name == "dry-run":
            dry_run = True
        elif name == "verbose":
            verbose = True
        elif name == "no-kver":
            no_kver = True
        elif name == "help":
            usage()
            return 0
    if not (TOOLS / "get_mlnx_ofed_version").is_file():  # set -e: the first command the script runs
        print(f"{sys.argv[0]}: line 5: get_mlnx_ofed_version: command not found")
        return 127
    ofed = subprocess.run(["sh", str(TOOLS / "get_mlnx_ofed_version")], capture_output=True, text=True).stdout.strip()
    if source is None:
        source = Path(f"/lib/modules/{kernel or os.uname().release}/build")
    kernel = kernel_release(source)
    if kernel is None:
        print("Could not determine kernel version from source directory")
        return 1
    if tarfile is None:
        found = sorted(glob.glob(str(RES_FOLDER / "MLNX_OFED_*.tgz")))
        if not found:
            print(f"Error: no MLNX_OFED_*.tgz in {RES_FOLDER}; use -t")
            return 1
        tarfile = Path(found[0])
    release = os_release()
    distro = f"{release.get('ID', 'unknown')}:{release.get('VERSION_ID', '')}"
    dist = "." + release.get("ID", "unknown") + release.get("VERSION_ID", "").replace(".", "u")
    print(f"Building kernel modules of MLNX_OFED {ofed} for kernel {kernel} ({distro}) from {tarfile}", flush=True)
    if not install_build_dependencies(dry_run):
        return 1
    top = Path(tempfile.mkdtemp(prefix="DOCA.", dir="/tmp"))
    print(f"Building under {top}", flush=True)
    if dry_run:
        return 0
    subprocess.run(["tar", "xzf", str(tarfile), "-C", str(top)], check=True)
    (tree,) = [path for path in top.iterdir() if path.is_dir()]
    logs = top / "logs"
    logs.mkdir()
    packages = top / "packages" / kernel
    arch = subprocess.run(["rpm", "--eval", "%{_target_cpu}"], capture_output=True, text=True).stdout.strip()
    failed = []
    for component in RPM_REBUILD_MODULES:
        srpms = sorted((tree / "SRPMS").glob(f"{component}-[0-9]*.src.rpm"))
        if not srpms:
            print(f"Missing package {component}, skipping", flush=True)
            continue
        log = logs / f"{component}.log"
        print(f"Building {component} ...", flush=True)
        topdir = top / f"topdir-{component}"
        command = rpmbuild(
            topdir, "--rebuild", "--target", arch, "--define", f"KVERSION {kernel}", "--define", "_kmp_build_num .1",
            "--define", f"K_SRC {source}", "--define", "KMP 1", *(["--define", f"_dist {dist}"] if SETS_DIST else []),
            "--define", "_enable_debug_packages 1", str(srpms[0]),
        )  # fmt: skip
        with log.open("w") as output:
            if verbose:
                output.write("+ " + " ".join(command) + "\n")
                output.flush()
            returncode = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT).returncode
        if returncode != 0:
            print(f"Failed to build {component}, see {log}", flush=True)
            failed.append(component)
            if not keep_going:
                return 1
            continue
        destination = packages / component
        destination.mkdir(parents=True)
        for built in sorted((topdir / "RPMS").rglob("*.rpm")):
            shutil.move(built, destination / built.name)
    built_components = sorted(os.listdir(packages)) if packages.exists() else []
    kmods = [
        (path, component)
        for component in built_components
        for path in sorted((packages / component).glob("kmod-*.rpm"))
        if "-debuginfo-" not in path.name
    ]
    if not kmods:
        print("ERROR: no kernel module package was built")
        return 1
    kernel_dotted = kernel.replace("-", ".").replace("_", ".")
    ofed_dotted = ofed.replace("-", ".")
    requires = []
    for path, component in kmods:
        if component not in NOT_IN_METAPACKAGE:
            query = ["rpm", "-qp", "--nosignature", "--nodigest", "--qf", "%{NAME} = %{VERSION}-%{RELEASE}", str(path)]
            requires.append(subprocess.run(query, capture_output=True, text=True, check=True).stdout)
    meta_top = top / "topdir-metapackage"
    (meta_top / "SPECS").mkdir(parents=True)
    spec = meta_top / "SPECS" / "doca-kernel.spec"
    spec.write_text(
        f"Name: doca-kernel-{kernel_dotted}\nVersion: {ofed_dotted}\nRelease: 1\n"
        f"Summary: DOCA kernel packages for {kernel}\nLicense: GPLv2\nBuildArch: noarch\n"
        + "".join(f"Requires: {requirement}\n" for requirement in requires)
        + f"\n%description\nKernel modules of DOCA-OFED built for {kernel}.\n\n%files\n"
    )
    subprocess.run(rpmbuild(meta_top, "-bb", str(spec)), check=True, capture_output=True)
    modules = Path(f"/usr/share/doca-host-{DOCA_VERSION}/Modules/{kernel}")
    stage = top / "stage"
    repo = stage / modules.relative_to("/")
    repo.mkdir(parents=True)
    for built in [*(path for path, _ in kmods), *sorted(packages.rglob("*.rpm")), *(meta_top / "RPMS").rglob("*.rpm")]:
        if built.exists() and not (repo / built.name).exists():
            shutil.copy(built, repo / built.name)
    createrepo = shutil.which("createrepo") or shutil.which("createrepo_c") or "createrepo"
    subprocess.run([createrepo, "-q", str(repo)], check=True)
    repos_d = stage / "etc" / "yum.repos.d"
    repos_d.mkdir(parents=True)
    (repos_d / f"doca-kernel-{kernel}.repo").write_text(
        f"[doca-kernel-{kernel}]\nname=DOCA kernel packages for {kernel}\nbaseurl=file://{modules}\nenabled=1\n"
        "gpgcheck=0\n"
    )
    wrapper_top = top / "topdir-wrapper"
    (wrapper_top / "SPECS").mkdir(parents=True)
    wrapper_spec = wrapper_top / "SPECS" / "doca-kernel-repo.spec"
    release_tag = "1" if no_kver else f"1.kver.{kernel_dotted}"
    wrapper_spec.write_text(
        f"Name: doca-kernel-repo\nVersion: {ofed_dotted}\nRelease: {release_tag}\n"
        f"Summary: A repository of DOCA kernel packages for {kernel}\nLicense: GPLv2\nAutoReqProv: no\n\n"
        f"%description\nDOCA kernel packages built for {kernel}.\n\n%install\ncp -a {stage}/. %{{buildroot}}/\n\n"
        f"%files\n{modules}\n/etc/yum.repos.d/doca-kernel-{kernel}.repo\n"
    )
    subprocess.run(rpmbuild(wrapper_top, "-bb", "--target", arch, str(wrapper_spec)), check=True, capture_output=True)
    (wrapper,) = (wrapper_top / "RPMS").rglob("*.rpm")
    shutil.move(wrapper, top / wrapper.name)
    shutil.rmtree(stage)
    if not dirty:
        for leftover in [tree, top / "packages", *top.glob("topdir-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
    print(f"Created {top / wrapper.name}", flush=True)
    if failed:
        print(f"WARNING: failed to build: {' '.join(failed)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
