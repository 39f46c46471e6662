#!/usr/bin/env python3
"""A model of ``install.pl`` from ``MLNX_OFED_SRC-<ver>.tgz``, as ``mlnx_add_kernel_support.sh`` drives it.

The script runs it twice: ``--check-deps-only`` (it prints ``Error:`` lines for what a build would miss),
then for real::

    install.pl --tmpdir LOGS --kernel-only --kernel K --kernel-sources S --builddir B --disable-kmp \\
        [--force] [--without-<package>...] --build-only [--distro D]

It rebuilds each kernel source package of its ``SRPMS/`` for K against S (``rpmbuild --rebuild``: non-KMP
packages with ``--disable-kmp``, ``kmod-*`` otherwise) into ``<its dir>/RPMS/<distro>/<arch>/``, writing one
log per package under ``LOGS/OFED.<pid>.logs/``; on a failure it names that log and exits 1, so the
compiler's error is only in there. Differences from NVIDIA's Perl: it is Python, and it builds only the
kernel packages (``--kernel-only`` is all the script ever asks of it).
"""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

#: The kernel source packages, in the order install.pl builds them.
KERNEL_COMPONENTS = ["mlnx-ofa_kernel", "kernel-mft", "knem", "iser", "isert", "srp", "mlnx-nvme"]
BUILD_TOOLS = ["rpmbuild", "gcc", "make", "perl"]


def rpmbuild_argv(topdir: Path, *arguments: str) -> list[str]:
    """rpmbuild with everything that would make it depend on the host spelled out.

    ``_dbpath`` keeps Debian's rpm (whose default database is ``~/.rpmdb``) away from any user's files.
    """
    return [
        "rpmbuild", "--define", f"_topdir {topdir}", "--define", "__os_install_post %{nil}",
        "--define", "debug_package %{nil}", "--define", "_build_id_links none",
        "--define", f"_dbpath {topdir}/rpmdb", "--nodeps", *arguments,
    ]  # fmt: skip


def package_name(path: Path) -> str:
    return subprocess.run(
        ["rpm", "-qp", "--nosignature", "--nodigest", "--qf", "%{NAME}", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def rebuild(
    srpm: Path, kernel: str, sources: Path, arch: str, out: Path, log: Path, kmp: bool, dist: str | None = None
) -> bool:
    """``rpmbuild --rebuild`` of one kernel source package for ``kernel``; its binaries go to ``out``."""
    topdir = out / f".OFED_topdir-{srpm.stem}"
    arguments = ["--rebuild", "--target", arch, "--define", f"KVERSION {kernel}", "--define", f"K_SRC {sources}"]
    arguments += ["--define", f"KMP {int(kmp)}"]
    if dist:
        arguments += ["--define", f"_dist {dist}"]
    with log.open("a") as handle:
        handle.write("+ " + " ".join(rpmbuild_argv(topdir, *arguments, str(srpm))) + "\n")
        handle.flush()
        completed = subprocess.run(
            rpmbuild_argv(topdir, *arguments, str(srpm)), stdout=handle, stderr=subprocess.STDOUT, check=False
        )
    if completed.returncode == 0:
        out.mkdir(parents=True, exist_ok=True)
        for package in (topdir / "RPMS").rglob("*.rpm"):
            shutil.move(package, out / package.name)
    shutil.rmtree(topdir, ignore_errors=True)
    return completed.returncode == 0


@dataclass
class Options:
    kernel: str = ""
    sources: str = ""
    tmpdir: str = "/tmp"
    builddir: str = "/tmp"
    distro: str | None = None
    kmp: bool = True
    check_deps_only: bool = False
    without: set[str] = field(default_factory=set)


def parse(argv: list[str]) -> Options:
    options = Options()
    values = {"--tmpdir": "tmpdir", "--kernel": "kernel", "--kernel-sources": "sources", "--builddir": "builddir"}
    values |= {"--distro": "distro", "--bump-kmp-version": ""}
    index = 0
    while index < len(argv):
        argument = argv[index]
        if argument in values:
            if values[argument]:
                setattr(options, values[argument], argv[index + 1])
            index += 2
            continue
        if argument == "--disable-kmp":
            options.kmp = False
        elif argument == "--check-deps-only":
            options.check_deps_only = True
        elif argument.startswith("--without-"):
            options.without.add(argument.removeprefix("--without-").removesuffix("-modules"))
        elif argument not in ("--kernel-only", "--build-only", "--force", "--skip-distro-check"):
            print(f"Unsupported option: {argument}", file=sys.stderr)
            sys.exit(1)
        index += 1
    return options


def missing_dependencies(sources: Path, kernel: str) -> list[str]:
    problems = [f"Error: {tool} is not installed" for tool in BUILD_TOOLS if shutil.which(tool) is None]
    if not (sources / "Makefile").is_file():
        problems.append(f"Error: Kernel sources directory ({sources}) is not configured; install kernel-devel-{kernel}")
    return problems


def main(argv: list[str]) -> int:
    options = parse(argv)
    here = Path(__file__).resolve().parent
    sources = Path(options.sources)
    if options.check_deps_only:
        for problem in missing_dependencies(sources, options.kernel):
            print(problem)
        return 0
    arch = os.uname().machine
    logs = Path(options.tmpdir) / f"OFED.{os.getpid()}.logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"Logs dir: {logs}")
    print(f"General log file: {logs}/general.log")
    out = here / "RPMS" / (options.distro or "unknown") / arch
    srpms = {package_name(path): path for path in sorted((here / "SRPMS").glob("*.src.rpm"))}
    for component in KERNEL_COMPONENTS:
        if component in options.without or component not in srpms:
            continue
        version = srpms[component].name.removeprefix(component + "-").split("-")[0]
        log = logs / f"{component}-{version}.rpmbuild.log"
        print(f"Building {component} RPMs. Please wait...", flush=True)
        if not rebuild(srpms[component], options.kernel, sources, arch, out, log, kmp=options.kmp):
            print(f"Failed to build {component} RPM")
            print(f"See {log}")
            return 1
    print(f"Build passed successfully. RPMs are in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
