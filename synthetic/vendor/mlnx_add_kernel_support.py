#!/bin/bash
''':'
exec /usr/bin/env python3 "$0" "$@"
'''

# A model of NVIDIA's mlnx_add_kernel_support.sh, installed as the synthetic bundles' script. It follows
# the vendor script step by step (VERSION 7.2 of MLNX_OFED 5.0, and the 4.x and 5.2+ copies where they
# differ; GENERATION below says which one this copy is):
#
# - root only; `-m/-k/-s/-t/--make-tgz/--make-iso/--kmp/-n/-y/--force/--skip-repo/--without-*/--distro/
#   --ofed-sources/-v/--version`, anything else prints the usage and exits 1;
# - without --distro the distro comes from `rpm -qf /etc/issue` (then /etc/os-release), so a host whose
#   rpm owns neither gets "Linux Distribution (...) is not supported";
# - exit 30, "Required kernel (K) is already supported", when the bundle holds rebuilt packages for K;
# - `cp -a` of the bundle to <t>/mlnx_iso.<pid>/<name>-ext, untar of src/*_SRC*tgz (4.x: *OFED*tgz),
#   install.pl --check-deps-only, then install.pl building the kernel packages; every step's output goes
#   to the log (<t>/mlnx_iso.<pid>_logs/mlnx_ofed_iso.<pid>.log; 4.x: <t>/mlnx_ofed_iso.<pid>.log) and a
#   failing step prints only `ERROR: Failed executing "..."` and `ERROR: See <log>`, leaving both behind;
# - the copy's *kmp*/*kmod*/*kernel-mft-mlnx-utils* files are deleted when the copy holds any (4.x: only
#   when the new build made KMP packages, which --disable-kmp never does, so the GA kmods stay);
# - the rebuilt packages go to RPMS/ (5.0-5.1: RPMS/COMMON/, linked into MLNX_LIBS/ and UPSTREAM_LIBS/),
#   K is appended to .supported_kernels, `distro` becomes "skip-distro-check" when --distro was given;
# - without --skip-repo (createrepo is required up front): mlnxofedinstall -p lists each group into
#   <group>_packages.txt, create_mlnx_ofed_installers.pl makes mlnx-ofed-<group>-<K>, createrepo runs;
# - <t>/<name>-ext.tgz (or .iso with mkisofs -J -joliet-long -r), then the work and log dirs are removed.
#
# One deliberate difference: NVIDIA's script switches to DEB mode when /usr/bin/lsb_release says Debian or
# Ubuntu; the test host is Debian, so this model always builds RPMs (ofedrepo's local-runner preflight is
# what refuses such hosts for real bundles). The file is a bash/Python polyglot so that `bash
# mlnx_add_kernel_support.sh` works as with the vendor's script.
import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

GENERATION = "current"  # the factory writes "legacy4" (4.x) or "split5" (5.0-5.1) into older bundles' copies
VERSION = {"current": "24.10", "legacy4": "5.0", "split5": "7.2"}[GENERATION]
PACKAGE = "MLNX_OFED_LINUX"
INSTALLER = "mlnxofedinstall"
GROUPS = ["all", "hpc", "basic", "vma", "vma-vpi", "vma-eth", "guest", "hypervisor", "kernel-only", "dpdk", "bluefield"]
REBUILT_PATTERNS = [
    "*mlnx-ofa_kernel-modules*", "*kernel*", "*knem*", "*srp*", "*iser*", "*mlnx-ofed-kernel-modules*",
    "*mlnx-en*", "*mlnx_en*", "*mlnx-sdp*", "*mlnx-rds*", "*mlnx-nfsrdma*", "*mlnx-nvme*", "*mlnx-rdma-rxe*",
]  # fmt: skip
SPACE_REQUIRED_KB = 614400


def colour(code: str, text: str) -> None:
    print(f"\033[{code}m{text}\033[0;39m", flush=True)


def err_echo(text: str) -> None:
    colour("1;31", f"ERROR: {text}")


def warn_echo(text: str) -> None:
    colour("1;35", f"WARNING: {text}")


def pass_echo(text: str) -> None:
    colour("1;34", text)


def usage() -> None:
    print(
        "\n\tUsage: mlnx_add_kernel_support.sh -m|--mlnx_ofed <path to MLNX_OFED directory> [--make-iso|--make-tgz]\n"
        "\t\t[-t|--tmpdir <temp work dir>] [--kmp] [-k|--kernel <kernel version>] [-s|--kernel-sources <path>]\n"
        "\t\t[--ofed-sources <path to tgz>] [-v|--verbose] [-n|--name] [-y|--yes] [--force] [--skip-repo]\n"
        "\t\t[--without-<package>] [--distro <e.g. rhel8.6>]\n"
    )


class Script:
    def __init__(self) -> None:
        self.log = Path("/tmp/mlnx_ofed_iso.log")
        self.verbose = False

    def ex(self, argv: list[str], cwd: Path | None = None) -> None:
        """Run a step with its output appended to the log; on failure say only where the log is."""
        if self.verbose:
            print("Running " + " ".join(argv))
        with self.log.open("a") as log:
            returncode = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, check=False).returncode
        if returncode != 0:
            print()
            err_echo('Failed executing "' + " ".join(argv) + '"')
            err_echo(f"See {self.log}")
            sys.exit(1)


def detect_distro() -> str | None:
    """What the vendor script asks rpm: the package owning /etc/issue (or /etc/os-release)."""
    for owned in ("/etc/issue", "/etc/os-release"):
        completed = subprocess.run(["rpm", "-qf", owned], capture_output=True, text=True, check=False)
        lines = [line for line in completed.stdout.splitlines() if "is not owned by any package" not in line]
        if completed.returncode == 0 and lines:
            match = re.match(r"(?:redhat|centos|rocky|almalinux)-release-(?:server-)?([0-9])\.([0-9]+)", lines[0])
            return f"rhel{match.group(1)}.{match.group(2)}" if match else lines[0]
    return None


def main(argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("You must be root to run mlnx_add_kernel_support.sh")
        return 1
    if not argv:
        usage()
        return 1
    script = Script()
    mlnx_ofed_dir = kernel = kernel_sources = name = distro = ofed_tgz = ""
    make_iso = yes = skip_repo = kmp = False
    disabled: list[str] = []
    tmp = Path(os.environ.get("TMP", "/tmp"))
    arguments = list(argv)
    while arguments:
        option = arguments.pop(0)
        if option in ("-h", "--help"):
            usage()
            return 0
        if option in ("-m", "--mlnx_ofed") and arguments:
            mlnx_ofed_dir = arguments.pop(0)
        elif option in ("-k", "--kernel") and arguments:
            kernel = arguments.pop(0)
        elif option in ("-s", "--kernel-sources") and arguments:
            kernel_sources = arguments.pop(0)
        elif option in ("-t", "--tmpdir") and arguments:
            tmp = Path(arguments.pop(0))
        elif option == "--kmp":
            kmp = True
        elif option in ("-v", "--verbose"):
            script.verbose = True
        elif option in ("--make-iso", "--make-tgz"):
            make_iso = option == "--make-iso"
        elif option in ("-n", "--name") and arguments:
            name = arguments.pop(0)
        elif option in ("-y", "--yes"):
            yes = True
        elif option == "--force":
            pass
        elif option == "--version":
            print(f"Version: {VERSION}")
            return 0
        elif option.startswith("--without-"):
            disabled.append(option)
        elif option == "--distro" and arguments:
            distro = arguments.pop(0).lower()
        elif option == "--ofed-sources" and arguments:
            ofed_tgz = arguments.pop(0)
        elif option == "--skip-repo":
            skip_repo = True
        else:
            usage()
            return 1
    distro_given = bool(distro)
    pid = os.getpid()
    tmpdir = tmp / f"mlnx_iso.{pid}"
    logs = tmp if GENERATION == "legacy4" else tmp / f"mlnx_iso.{pid}_logs"
    script.log = logs / f"mlnx_ofed_iso.{pid}.log"
    if not kernel:
        kernel = os.uname().release
    if not kernel_sources:
        kernel_sources = f"/lib/modules/{kernel}/build"
    if make_iso and shutil.which("mkisofs") is None:
        err_echo("mkisofs command not found")
        return 1
    bundle = Path(mlnx_ofed_dir)
    if not (bundle / "create_mlnx_ofed_installers.pl").exists() and not skip_repo:
        warn_echo("create_mlnx_ofed_installers.pl is missing, cannot build a repository.")
        skip_repo = True
    if not mlnx_ofed_dir:
        err_echo(f"Path to {PACKAGE} directory is not defined.")
        usage()
        return 1
    space_dir = tmpdir.parent
    while not space_dir.is_dir():
        space_dir = space_dir.parent
    stats = os.statvfs(space_dir)
    if stats.f_bavail * stats.f_frsize // 1024 < SPACE_REQUIRED_KB:
        err_echo(f"Not enough disk space in the {space_dir} directory. Required {SPACE_REQUIRED_KB}KB")
        return 1
    tmpdir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    build_arch = subprocess.run(["rpm", "--eval", "%{_target_cpu}"], capture_output=True, text=True).stdout.strip()

    if not distro:
        detected = detect_distro()
        if detected is None or not re.fullmatch(r"rhel[0-9]+\.[0-9]+", detected):
            err_echo(f"Linux Distribution ({detected or 'unsupported'}) is not supported")
            return 1
        distro = detected

    mofed_type = "ISO" if make_iso else "TGZ"
    pass_echo(f"Note: This program will create {PACKAGE} {mofed_type} for {distro} under {tmp} directory.")
    if not yes:
        try:
            answer = input("Do you want to continue?[y/N]:")
        except EOFError:
            answer = ""
        if answer not in ("y", "Y"):
            return 0
    print(f"See log file {script.log}\n")

    marker = bundle / ".mlnx" if (bundle / ".mlnx").is_file() else bundle / "mlnx"
    if not marker.is_file():
        err_echo(f"{mlnx_ofed_dir} is not a supported {PACKAGE} directory")
        return 1
    version = marker.read_text().strip()
    shipped_distro = (bundle / "distro").read_text().strip() if (bundle / "distro").is_file() else ""
    if shipped_distro not in (distro, "skip-distro-check"):
        print(f"WARNING: The current {PACKAGE} is intended for {shipped_distro} !")
        print(f"You may need to use the '--skip-distro-check' flag to install the resulting {PACKAGE} on this system.")
        print()

    rpm_kernel = kernel.replace("-", "_")
    packages_dir = bundle / "RPMS" / "COMMON" if GENERATION == "split5" else bundle / "RPMS"
    already = [
        f"mlnx-ofa_kernel-modules-*{rpm_kernel}[_.]*{build_arch}.rpm",
        f"kernel-mft-*{rpm_kernel}.{build_arch}.rpm",
        f"srp-*{rpm_kernel}.{build_arch}.rpm",
        f"iser-*{rpm_kernel}.{build_arch}.rpm",
        f"knem-*{rpm_kernel}.{build_arch}.rpm",
    ]
    if all(list(packages_dir.glob(pattern)) for pattern in already):
        pass_echo(f"Required kernel ({kernel}) is already supported by {PACKAGE}")
        shutil.rmtree(tmpdir, ignore_errors=True)
        if logs != tmp:
            shutil.rmtree(logs, ignore_errors=True)
        return 30

    iso_dir = name or f"{PACKAGE}-{version}-{distro}-{os.uname().machine}-ext"
    copy = tmpdir / iso_dir
    script.ex(["/bin/rm", "-rf", str(copy)])
    script.ex(["cp", "-a", str(bundle), str(copy)])

    if not ofed_tgz:
        found = sorted((copy / "src").glob("*OFED*tgz" if GENERATION == "legacy4" else "*_SRC*tgz"))
        ofed_tgz = str(found[0]) if found else ""
    if not ofed_tgz:
        err_echo(f"OFED tgz package not found under {iso_dir}/src directory")
        print("Please provide path to the OFED sources tgz package using the '--ofed-sources' flag.")
        return 1
    ofed = Path(ofed_tgz).name.removesuffix(".tgz")

    missing_packages = False
    print("Checking if all needed packages are installed...")
    if not skip_repo and shutil.which("createrepo") is None:
        missing_packages = True
        err_echo("'createrepo' is not installed!")
        print(f"'createrepo' package is needed for creating a repository from {PACKAGE} RPMs.")
        print(f"Use '--skip-repo' flag if you are not going to set {PACKAGE} as repository for")
        print("installation using yum/zypper tools.\n")

    script.ex(["tar", "xzf", ofed_tgz], cwd=tmpdir)
    install_pl = [
        str(tmpdir / ofed / "install.pl"), "--tmpdir", str(logs), "--kernel-only", "--kernel", kernel,
        "--kernel-sources", kernel_sources, "--builddir", str(tmpdir), *([] if kmp else ["--disable-kmp"]),
        *disabled, "--build-only", *(["--distro", distro] if distro_given else []),
    ]  # fmt: skip
    deps = subprocess.run(
        [*install_pl, "--check-deps-only"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmpdir
    ).stdout
    if "Error:" in deps:
        missing_packages = True
        print(deps)
    if missing_packages:
        return 1

    pass_echo(f"Building {PACKAGE} RPMS . Please wait...")
    script.ex(install_pl, cwd=tmpdir)

    rpms = copy / "RPMS"
    built = tmpdir / ofed / "RPMS"
    stock_kmps = [path for path in rpms.rglob("*") if "kmp" in path.name or "kmod" in path.name]
    new_kmps = [path for path in built.rglob("*") if "kmp" in path.name or "kmod" in path.name]
    if new_kmps if GENERATION == "legacy4" else stock_kmps:
        doomed = [
            str(path) for path in rpms.rglob("*")
            if any(word in path.name for word in ("kmp", "kmod", "kernel-mft-mlnx-utils"))
        ]  # fmt: skip
        script.ex(["/bin/rm", "-fv", *doomed])
    destination = rpms / "COMMON" if GENERATION == "split5" else rpms
    for package in sorted(built.rglob("*.rpm")):
        if (
            any(fnmatch.fnmatch(package.name, pattern) for pattern in REBUILT_PATTERNS)
            and "debuginfo" not in package.name
        ):
            script.ex(["install", "-m", "0644", str(package), str(destination)])
    if GENERATION == "split5":
        for variant in ("UPSTREAM_LIBS", "MLNX_LIBS"):
            for package in sorted((rpms / "COMMON").glob("*.rpm")):
                if not any(word in package.name for word in ("srptools", "mlnx-ofed-kernel-only", "supported_kernels")):
                    script.ex(["/bin/ln", "-snf", f"../COMMON/{package.name}"], cwd=rpms / variant)

    for listing in (".supported_kernels", "supported_kernels"):
        with (copy / listing).open("a") as handle:
            handle.write(kernel + "\n")
    if distro_given:
        (copy / "distro").write_text("skip-distro-check\n")

    if not skip_repo:
        pass_echo(f"Creating metadata-rpms for {kernel} ...")
        variants = [("MLNX_LIBS", "--mlnx-libs"), ("UPSTREAM_LIBS", "--upstream-libs")]
        targets = [(rpms / variant, flag) for variant, flag in variants] if GENERATION == "split5" else [(rpms, None)]
        for target, flag in targets:
            for group in GROUPS:
                for user_only in ([], ["--user-space-only"]) if group != "kernel-only" else ([],):
                    listing = target / f"{group}{'-user-only' if user_only else ''}_packages.txt"
                    command = [str(copy / INSTALLER), f"--{group}", *([flag] if flag else []), "-p", "-k", kernel]
                    command += ["--tmpdir", str(logs), *disabled, *(["--distro", distro] if distro_given else [])]
                    with listing.open("w") as output:
                        subprocess.run(
                            [*command, "--skip-distro-check", *user_only],
                            stdout=output, stderr=subprocess.DEVNULL, check=False,
                        )  # fmt: skip
            installer = [str(copy / "create_mlnx_ofed_installers.pl")]
            if GENERATION != "legacy4":
                installer.insert(0, "/usr/bin/perl")
            installer += ["--with-hpc", "--tmpdir", str(logs), "--mofed", str(copy), "--rpms-tdir", str(target)]
            installer += ["--output", str(copy), "--kernel", kernel, "--ignore-groups", "eth-only"]
            installer += ["--upstream-libs"] if flag == "--upstream-libs" else []
            script.ex(installer)
            for listing in target.glob("*_packages.txt"):
                listing.unlink()
        for target in [rpms, *(rpms / variant for variant, _ in variants if GENERATION == "split5")]:
            shutil.rmtree(target / "repodata", ignore_errors=True)
            script.ex(["createrepo", "-q", "-g", str(copy / "comps.xml"), str(target)])
        (copy / "comps.xml").unlink(missing_ok=True)
        warn_echo("If you are going to configure this package as a repository, then please note")
        warn_echo("that it contains unsigned rpms, therefore, you need to disable the gpgcheck")
        warn_echo("by setting 'gpgcheck=0' in the repository conf file.")

    if make_iso:
        pass_echo("Running mkisofs...")
        iso = tmp / f"{iso_dir}.iso"
        with script.log.open("a") as log:
            completed = subprocess.run(
                ["mkisofs", "-A", f"{PACKAGE}-{version} Host Software {distro} CD", "-o", str(iso),
                 "-J", "-joliet-long", "-r", str(copy)],
                stdout=log, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        if completed.returncode != 0 or not iso.exists():
            err_echo(f"Failed to create {iso}")
            return 1
        pass_echo(f"Created {iso}")
    else:
        script.ex(["tar", "czf", str(tmp / f"{iso_dir}.tgz"), iso_dir], cwd=tmpdir)
        pass_echo(f"Created {tmp / f'{iso_dir}.tgz'}")

    shutil.rmtree(tmpdir, ignore_errors=True)
    if logs != tmp:
        shutil.rmtree(logs, ignore_errors=True)
    script.log.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
