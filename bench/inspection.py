"""Inspection benchmark: `ofedrepo inspect` against `virt-inspector --no-applications`, in the same run.

    .venv/bin/python bench/inspection.py [--rounds 2]

Measures, on the test images of synthetic/images.py (built here, or taken from
OFEDREPO_TEST_IMAGE_CACHE):
1. wall time of one image, ofedrepo (fresh database each round) / virt-inspector (goal <= 1.0x);
2. re-inspection of a known 256 MiB raw image against `sha256sum` of it (goal: hashing time only);
3. three images in one `ofedrepo inspect` against three separate runs.
Both tools get LIBGUESTFS_BACKEND_SETTINGS=force_tcg when KVM cannot launch here, so neither pays for the
failed KVM attempt. Rewrites the "inspect" section of docs/benchmarks.md.
"""

import sys
from pathlib import Path

# This script shares its name with the standard library's `inspect`: its directory leaves the import path
# before anything imports that module.
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from bench.report import write_section  # noqa: E402
from synthetic import images as disk_images  # noqa: E402

OFEDREPO = str(Path(sys.executable).parent / "ofedrepo")


def timed(argv: Sequence[str], environment: dict[str, str], expect_success: bool = True) -> float:
    start = time.perf_counter()
    completed = subprocess.run(list(argv), env=environment, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if expect_success and completed.returncode != 0:
        raise SystemExit(f"{argv[0]} failed:\n{completed.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    cache = Path(os.environ.get("OFEDREPO_TEST_IMAGE_CACHE") or tempfile.mkdtemp(prefix="ofedrepo-bench-images-"))
    images = disk_images.build_images(disk_images.ALL, cache)
    rocky = images[disk_images.ROCKY8.name]
    environment = {**os.environ, "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
    environment.pop("OFEDREPO_DATABASE_URL", None)
    with tempfile.TemporaryDirectory(prefix="ofedrepo-bench-") as scratch:
        work = Path(scratch)

        def ofedrepo(data_dir: str, *paths: Path) -> tuple[list[str], dict[str, str]]:
            return [OFEDREPO, "inspect", "--json", *map(str, paths)], {**environment, "OFEDREPO_DATA_DIR": data_dir}

        ours, theirs = [], []
        for round_number in range(arguments.rounds):
            argv, env = ofedrepo(str(work / f"single-{round_number}"), rocky)
            ours.append(timed(argv, env))
            virt = ["virt-inspector", "--no-applications", "--no-icon", "--format=qcow2", "-a", str(rocky)]
            theirs.append(timed(virt, environment))
        single_ratio = statistics.median(ours) / statistics.median(theirs)

        raw = work / "rocky.raw"
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(rocky), str(raw)], check=True)
        argv, env = ofedrepo(str(work / "known"), raw)
        first = timed(argv, env)
        known = statistics.median(timed(argv, env) for _ in range(3))
        hashing = statistics.median(timed(["sha256sum", str(raw)], environment) for _ in range(3))

        three = [images[spec.name] for spec in (disk_images.ROCKY8, disk_images.CENTOS73, disk_images.TRIPLEO)]
        argv, env = ofedrepo(str(work / "together"), *three)
        together = timed(argv, env)
        separately = sum(timed(*ofedrepo(str(work / f"apart-{index}"), image)) for index, image in enumerate(three))

    lines = [
        f"- one image (rocky 8.6 qcow2), median of {arguments.rounds}: "
        f"`ofedrepo inspect` {statistics.median(ours):.1f} s, "
        f"`virt-inspector --no-applications` {statistics.median(theirs):.1f} s: ratio **{single_ratio:.2f}x** "
        "(goal <= 1.0x)",
        f"- known image (256 MiB raw), median of 3: {known:.2f} s against {hashing:.2f} s for `sha256sum` "
        f"alone (first inspection: {first:.1f} s); the difference is the CLI's start-up",
        f"- three images: one launch {together:.1f} s, three separate runs {separately:.1f} s "
        f"(**{together / separately:.2f}x**)",
        "- under TCG software emulation (KVM crashes on this machine), both tools alike",
    ]
    print("\n".join(lines))
    write_section("inspect", "\n".join(lines))


if __name__ == "__main__":
    main()
