"""`ofedrepo demo`: the whole job on synthetic inputs, through a running service, proven by an install.

NVIDIA's bundles cannot be downloaded without an account, so the demo makes what the test suite makes (the
``synthetic`` package: an MLNX_OFED bundle whose packages come from the real rpmbuild and whose
``mlnx_add_kernel_support.sh`` behaves as NVIDIA's does, kernel sources, a small Rocky 8.6 disk image), starts the
service on them with its own data directory, and drives it as a user would, over HTTP: register the bundle,
inspect the image, request a repo for it, follow the build's log, then install the DIB package list from the
published repo with the real dnf into a throwaway root, with ``gpgcheck=1``, and check the module's vermagic.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from cli.common import address_taken, reports_errors, settings_of
from ofedrepo.errors import OfedrepoError

#: Where the demo keeps its inputs, data and logs unless told otherwise (relative to the working directory).
DEFAULT_DIRECTORY = Path("ofedrepo-demo")
#: What a DIB build's dnf would be told, here with its own configuration and no plugin.
DNF_CONF = "[main]\ngpgcheck=1\nbest=True\nskip_if_unavailable=False\ninstall_weak_deps=False\n"
BUILD_WAIT_SECONDS = 600

out = Console(highlight=False, stderr=True, soft_wrap=True)  # a kernel or a URL is never broken


def _step(text: str) -> None:
    out.print(f"[bold]==>[/] {escape(text)}")


def _inputs(directory: Path) -> tuple[Path, Path, Path]:
    """The synthetic bundle (tgz), the image (qcow2) and the kernel sources; made once, kept for the next run."""
    from synthetic import images
    from synthetic.bundle import CURRENT, make_bundle, make_kernel_sources, make_test_key, make_tgz

    directory.mkdir(parents=True, exist_ok=True)
    tgz = directory / f"{CURRENT.name}.tgz"
    if not tgz.exists():
        _step(f"Making a synthetic {CURRENT.name} with rpmbuild (NVIDIA's layout, its script modelled)")
        work = directory / "work"
        shutil.rmtree(work, ignore_errors=True)
        key = make_test_key(work / "gnupg")
        make_tgz(make_bundle(CURRENT, key, work), directory / f".{tgz.name}")
        os.replace(directory / f".{tgz.name}", tgz)
        subprocess.run(["gpgconf", "--homedir", str(key.gnupg_home), "--kill", "gpg-agent"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    cache = directory / "images"
    cached = images.cached_image(images.DEMO, cache).exists()
    _step("Reusing the small Rocky Linux 8.6 disk image" if cached else "Making a small Rocky Linux 8.6 disk image")
    image = images.build_images([images.DEMO], cache)[images.DEMO.name]
    sources = directory / "kernels"
    for kernel in images.DEMO.kernels:  # what kernel-devel would install under /usr/src/kernels
        make_kernel_sources(sources, kernel)
    return tgz, image, sources


def _demo_port(asked: int | None, default: int) -> int:
    """The port asked for, which must be free; else the default (``OFEDREPO_PORT``) when free, else any free port
    (``make run`` may be serving on the default): the demo never talks to a service other than its own."""
    if asked is not None:
        if address_taken("127.0.0.1", asked):
            raise OfedrepoError(f"port {asked} is in use on 127.0.0.1: pass another with --port")
        return asked
    if not address_taken("127.0.0.1", default):
        return default
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        chosen: int = probe.getsockname()[1]
    _step(f"Port {default} is in use (make run?): the demo serves on {chosen}")
    return chosen


def _start_service(directory: Path, inputs: Path, sources: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    url = f"http://127.0.0.1:{port}"
    environment = {name: value for name, value in os.environ.items() if not name.startswith("OFEDREPO_")}
    environment |= {
        "OFEDREPO_DATA_DIR": str(directory / "var"),
        "OFEDREPO_PUBLIC_URL": url,
        "OFEDREPO_HOST": "127.0.0.1",
        "OFEDREPO_PORT": str(port),
        "OFEDREPO_IMPORT_DIRS": str(inputs),
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(sources),
        # NVIDIA's script needs an RPM host of the bundle's distro, which the local runner checks first; the
        # synthetic script runs anywhere, so the check is off for the demo's own service only.
        "OFEDREPO_BUILD_LOCAL_PREFLIGHT": "false",
        "OFEDREPO_QUEUE_POLL_INTERVAL": "0.5",
    }
    log = (directory / "serve.log").open("ab")
    argv = [sys.executable, "-c", "from cli.main import main; main()", "serve", "--worker"]
    process = subprocess.Popen(argv, env=environment, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break  # it could not start (the port taken meanwhile): whatever answers there is not the demo's
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200 and process.poll() is None:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise OfedrepoError(f"the demo's service did not start on {url} (port in use? see {directory / 'serve.log'})")


def _answer(response: httpx.Response, *expected: int) -> Any:
    if response.status_code not in expected:
        raise OfedrepoError(f"{response.request.method} {response.request.url.path}: {response.status_code} "
                            f"{response.text[:500]}")  # fmt: skip
    return response.json()


def _follow(client: httpx.Client, build_id: int) -> dict[str, Any]:
    """The build's log as it grows (the script's own output), until it ends."""
    offset, deadline = 0, time.monotonic() + BUILD_WAIT_SECONDS
    while time.monotonic() < deadline:
        answer = client.get(f"/api/v1/builds/{build_id}/log", params={"offset": offset})
        for line in answer.text.splitlines():
            out.print(f"  [dim]{escape(line)}[/]")
        offset = int(answer.headers.get("X-Log-Offset", offset))
        if answer.headers.get("X-Build-State") in ("succeeded", "failed", "cancelled"):
            build: dict[str, Any] = _answer(client.get(f"/api/v1/builds/{build_id}"), 200)
            return build
        time.sleep(1)
    raise OfedrepoError(f"build {build_id} did not end within {BUILD_WAIT_SECONDS} s")


def _prove(client: httpx.Client, repo_id: int, kernel: str, root: Path) -> list[str]:
    """Install the DIB package list with dnf (``gpgcheck=1``) into ``root``; the installed mlx5_core's vermagic."""
    from ofedrepo.repos.verify import vermagic

    shutil.rmtree(root, ignore_errors=True)
    (root / "reposdir").mkdir(parents=True)
    (root / "reposdir" / "ofedrepo-demo.repo").write_text(client.get(f"/api/v1/repos/{repo_id}/repofile").text)
    (root / "dnf.conf").write_text(DNF_CONF)
    packages = _answer(client.get(f"/api/v1/repos/{repo_id}/dib"), 200)["environment"]["DIB_MLNX_OFED_PKGLIST"]
    _step(f"Proving it: dnf installs {packages} from the repo into a throwaway root, gpgcheck=1")
    argv = [
        "dnf", "-y", "-q", "--config", str(root / "dnf.conf"), "--installroot", str(root / "installroot"),
        "--setopt", f"reposdir={root / 'reposdir'}", "--setopt", f"cachedir={root / 'cache'}",
        "--releasever", "8", "--forcearch", "x86_64", "--disableplugin", "*", "install", *packages.split(),
    ]  # fmt: skip
    installed = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if installed.returncode != 0:
        raise OfedrepoError(f"dnf could not install {packages}: {(installed.stderr or installed.stdout)[-1000:]}")
    modules = sorted((root / "installroot" / "lib" / "modules" / kernel).rglob("mlx5_core.ko"))
    if not modules:
        raise OfedrepoError(f"dnf installed {packages}, but no mlx5_core.ko for {kernel}")
    return [
        f"/{module.relative_to(root / 'installroot')}: vermagic {(vermagic(module.read_bytes()) or '?').split()[0]}"
        for module in modules
    ]


@reports_errors
def demo(
    context: typer.Context,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo keeps its inputs, its own data dir and its log.")
    ] = DEFAULT_DIRECTORY,
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="The demo service's port (default: OFEDREPO_PORT, or a free one if in use)."
        ),
    ] = None,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Keep serving afterwards for you to browse (Ctrl-C stops).")
    ] = True,
) -> None:
    """The whole job on synthetic inputs: bundle, image, inspect, request, build, publish, and an install with dnf
    that proves it (no NVIDIA download needed)."""
    settings = settings_of(context)
    directory = directory.absolute()
    tgz, image, sources = _inputs(directory / "inputs")
    _step("Starting the service (its own data dir, SQLite, an embedded worker)")
    process, url = _start_service(directory, directory / "inputs", sources, _demo_port(port, settings.port))
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            bundle = _answer(client.post("/api/v1/bundles", json={"path": str(tgz)}), 200, 201)
            _step(f"Registered bundle {bundle['id']}: {bundle['name']}")
            inspected = _answer(client.post("/api/v1/images", json={"path": str(image)}), 200, 201)
            kernel = inspected["default_kernel"]
            system = f"{inspected['distro']} {inspected['os_version']}"
            rule, fits = inspected["default_kernel_rule"], inspected["ofed_distro"]
            _step(f"Inspected image {inspected['id']}: {system} boots {kernel} ({rule}); its bundles: {fits}")
            asked = _answer(client.post("/api/v1/repos", json={"image_id": inspected["id"]}), 200, 202)
            build_id = asked["build"]["id"]
            _step(f"Requested a repo for it: build {build_id}, mlnx_add_kernel_support.sh for {kernel}")
            build = _follow(client, build_id)
            if build["state"] != "succeeded":
                raise OfedrepoError(f"build {build_id} {build['state']}: {build['error']}")
            repo = _answer(client.get(f"/api/v1/repos/{asked['id']}"), 200)
            _step(f"Build {build_id} succeeded: published version {build['version_number']}")
            for line in _prove(client, asked["id"], kernel, directory / "dnf-root"):
                out.print(f"  [green]✓[/] {escape(line)}")
        sys.stdout.write(
            f"DIB_MLNX_OFED_REPO={repo['latest_url']}\nrepo:  {url}/ui/repos/{asked['id']}\n"
            f"build: {url}/ui/builds/{build_id}\napi:   {url}/docs\n"
        )
        if serve:
            _step(f"Serving on {url} for you to browse; Ctrl-C stops (log: {directory / 'serve.log'})")
            process.wait()
        else:
            _step(
                f"--no-serve: the service stops now; `OFEDREPO_DATA_DIR={directory / 'var'} ofedrepo serve "
                f"--port {url.rsplit(':', 1)[1]}` serves these URLs again"
            )
    except KeyboardInterrupt:
        pass
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        from ofedrepo.repos.signing import stop_agents_under

        stop_agents_under(directory)  # the site key's and the proof's dnf keyring's
