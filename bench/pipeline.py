"""Pipeline benchmark: request → published through the running service, minus the vendor script's own time.

    .venv/bin/python bench/pipeline.py [--packages 150] [--rounds 3]

Starts `ofedrepo serve` (SQLite, embedded worker, default poll interval) on a loopback port, uploads a
150-package synthetic bundle, then for each round asks `POST /api/v1/repos` for a new kernel and waits for
the build to succeed. In the same run it times the bundle's own `mlnx_add_kernel_support.sh` for the same
kernel directly: the difference of the medians is ofedrepo's overhead (goal <= 5 s: finding sources, the
process, unpacking and verifying the output, signing, createrepo, the atomic publish). Pickup latency is the
build's `started_at - created_at` as the database recorded it (goal <= 1 s). Rewrites the "pipeline" section
of docs/benchmarks.md.
"""

import sys
from pathlib import Path

# Run as a script, bench/ comes first on the path and bench/inspection.py would shadow the standard library's.
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime  # noqa: E402

import httpx  # noqa: E402

from bench.report import write_section  # noqa: E402
from synthetic.bundle import (  # noqa: E402
    STOCK_PACKAGES,
    BundleSpec,
    add_kernel_support,
    make_bundle,
    make_kernel_sources,
    make_test_key,
    make_tgz,
)

BIN = Path(sys.executable).parent


def kernel(index: int) -> str:
    return f"4.18.0-372.{100 + index}.1.el8_6.x86_64"


def start_service(
    data_dir: Path, sources: Path, log: Path, extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {
        **os.environ,
        "OFEDREPO_DATA_DIR": str(data_dir),
        "OFEDREPO_PUBLIC_URL": url,
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(sources),
        "OFEDREPO_BUILD_LOCAL_PREFLIGHT": "false",  # the synthetic bundle's script, on a development host
        **(extra or {}),
    }
    environment.pop("OFEDREPO_DATABASE_URL", None)
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(BIN / "ofedrepo"), "serve", "--port", str(port)], env=environment, stdout=output, stderr=output
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).json()["workers"] >= 1:
                return process, url
        except (httpx.TransportError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"ofedrepo serve did not start:\n{log.read_text()}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ofedrepo-bench-") as scratch:
        work = Path(scratch)
        spec = BundleSpec(extra_packages=max(0, arguments.packages - STOCK_PACKAGES))
        bundle = make_bundle(spec, make_test_key(work / "key"), work / "bundle")
        archive = make_tgz(bundle, work / f"{bundle.name}.tgz")
        sources = work / "kernels"
        for index in range(arguments.rounds * 2):
            make_kernel_sources(sources, kernel(index))

        script_times = []
        for index in range(arguments.rounds):
            start = time.perf_counter()
            add_kernel_support(bundle, kernel(index), sources / kernel(index), work / f"direct-{index}")
            script_times.append(time.perf_counter() - start)

        process, url = start_service(work / "var", sources, work / "serve.log")
        try:
            with archive.open("rb") as stream:
                httpx.post(f"{url}/api/v1/bundles", files={"file": (archive.name, stream)}, timeout=600)
            totals, pickups = [], []
            for index in range(arguments.rounds, arguments.rounds * 2):
                start = time.perf_counter()
                answer = httpx.post(f"{url}/api/v1/repos", json={"kernel": kernel(index)}, timeout=30).json()
                build_id = answer["build"]["id"]
                while True:
                    build = httpx.get(f"{url}/api/v1/builds/{build_id}", timeout=30).json()
                    if build["state"] in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(0.05)
                totals.append(time.perf_counter() - start)
                if build["state"] != "succeeded":
                    raise SystemExit(f"build {build_id} {build['state']}: {build['error']}")
                created = datetime.fromisoformat(build["created_at"])
                pickups.append((datetime.fromisoformat(build["started_at"]) - created).total_seconds())
        finally:
            process.terminate()
            process.wait(timeout=60)

    script = statistics.median(script_times)
    total = statistics.median(totals)
    overhead = total - script
    pickup = max(pickups)
    lines = [
        f"- bundle: {arguments.packages} packages; {arguments.rounds} builds, each for a new kernel",
        f"- `mlnx_add_kernel_support.sh` run directly: median {script:.2f} s",
        f"- `POST /api/v1/repos` → build succeeded, through the server: median {total:.2f} s",
        f"- overhead (difference of the medians): **{overhead:.2f} s** (goal <= 5 s)",
        f"- pickup latency (`started_at - created_at`): worst {pickup:.2f} s of {arguments.rounds} (goal <= 1 s; "
        "idle workers poll every `OFEDREPO_QUEUE_POLL_INTERVAL`, 0.5 s by default)",
    ]
    print("\n".join(lines))
    write_section("pipeline", "\n".join(lines))


if __name__ == "__main__":
    main()
