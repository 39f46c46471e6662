"""Publish benchmark: a 150-package bundle, our metadata step against the createrepo_c CLI in the same run.

    .venv/bin/python bench/publish.py [--packages 150] [--rounds 5]

Prints the timings and the ratio (ours / createrepo_c CLI; goal <= 1.0) and rewrites the "publish" section of
docs/benchmarks.md. The CLI runs with --no-database because ofedrepo writes no sqlite metadata (dnf does not
read it); both write gzip-compressed XML with checksummed file names.
"""

import sys
from pathlib import Path

# Run as a script, bench/ comes first on the path and bench/inspection.py would shadow the standard library's.
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from bench.report import write_section  # noqa: E402
from ofedrepo.config import Settings  # noqa: E402
from ofedrepo.db import make_engine, session_factory, upgrade  # noqa: E402
from ofedrepo.repos.metadata import write_repodata  # noqa: E402
from ofedrepo.repos.publish import Publisher  # noqa: E402
from synthetic.bundle import (  # noqa: E402
    STOCK_PACKAGES,
    BundleSpec,
    add_kernel_support,
    make_bundle,
    make_kernel_sources,
    make_test_key,
)

KERNEL = "4.18.0-372.26.1.el8_6.x86_64"


def timed(action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ofedrepo-bench-") as scratch:
        work = Path(scratch)
        key = make_test_key(work / "key")
        spec = BundleSpec(extra_packages=max(0, arguments.packages - STOCK_PACKAGES))
        bundle = make_bundle(spec, key, work)
        sources = make_kernel_sources(work / "kernels", KERNEL)
        ext = add_kernel_support(bundle, KERNEL, sources, work / "ext")

        settings = Settings(data_dir=work / "var")
        engine = make_engine(settings.resolved_database_url)
        upgrade(engine)
        publisher = Publisher(settings, session_factory(engine))
        publisher.publish(bundle)  # first use: creates the site key, which is not what we measure
        whole_start = time.perf_counter()
        result = publisher.publish(ext)
        whole = time.perf_counter() - whole_start

        rpms = work / "metadata-input"
        shutil.copytree(result.path / "RPMS", rpms, ignore=shutil.ignore_patterns("repodata"))
        names = sorted(path.name for path in rpms.glob("*.rpm"))

        def ours() -> None:
            shutil.rmtree(rpms / "repodata", ignore_errors=True)
            write_repodata(rpms, names)

        def cli() -> None:
            shutil.rmtree(rpms / "repodata", ignore_errors=True)
            subprocess.run(["createrepo_c", "--no-database", "--quiet", str(rpms)], check=True)

        ours_times, cli_times = [], []
        for _ in range(arguments.rounds):
            cli_times.append(timed(cli))
            ours_times.append(timed(ours))
        ours_median, cli_median = statistics.median(ours_times), statistics.median(cli_times)
        ratio = ours_median / cli_median

    lines = [
        f"- packages: {len(names)} ({result.package_count} published, {len(result.signed)} signed with the site key)",
        f"- whole publish (unpack, read, sign, stage, metadata, rename): {whole:.2f} s (goal: well under 60 s)",
        f"- metadata, ofedrepo (createrepo_c bindings): median {ours_median * 1000:.0f} ms of {arguments.rounds}",
        f"- metadata, `createrepo_c --no-database` CLI: median {cli_median * 1000:.0f} ms of {arguments.rounds}",
        f"- ratio ofedrepo / CLI: **{ratio:.2f}x** (goal <= 1.0x)",
    ]
    print("\n".join(lines))
    write_section("publish", "\n".join(lines))


if __name__ == "__main__":
    main()
