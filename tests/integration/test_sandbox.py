"""A bundle's script is code from outside: with the local runner it runs in a bubblewrap sandbox, as root of a user
namespace of its own and an unprivileged uid outside, without capabilities, under limits.

Hostile scripts try what such scripts did before (read the site key, read the API tokens from the server's /proc
environ, write into the published tree, reach the network, mount a cgroup hierarchy and set its release_agent,
ptrace the worker, fork without end, fill the memory and the disk, plant links for the worker to follow) and
report each attempt into the build log. Probes that must succeed stand beside them, so that a sandbox that
merely breaks everything (a missing tool, a failed mount) cannot pass for a boundary. The tests run as CI runs
them: as root.
"""

import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ofedrepo.storage import DataDir, remove_tree
from synthetic.bundle import SCRIPT, make_kernel_sources, make_tgz
from tests.conftest import TARGET_KERNEL, RunningServer, start_server, stop_server
from tests.integration.test_pipeline import ENDED, build_log, wait_for
from tests.support.builder_image import build_containers, podman_settings
from tests.support.kept_scratch import kept_tree
from workers.sandbox import CGROUP_PARENT, CGROUP_ROOT

TOKEN = "sandbox-test-token"
SANDBOX_UID = 2_000_000_000
MAX_PROCESSES = 64
MAX_MEMORY = 256 * 1024**2
MAX_SCRATCH = 64 * 1024**2
LOG_CAP = 1024 * 1024
HEADERS = {"Authorization": f"Bearer {TOKEN}"}

#: ``try NAME COMMAND``: an attempt that must fail; ``probe NAME COMMAND``: something a build needs, which must work.
PREAMBLE = """#!/bin/bash
try() {{ if eval "$2" >/dev/null 2>&1; then echo "HOSTILE: $1: DONE"; else echo "HOSTILE: $1: refused"; fi; }}
probe() {{ if eval "$2" >/dev/null 2>&1; then echo "PROBE: $1: ok"; else echo "PROBE: $1: failed"; fi; }}
"""

ESCAPES = (
    PREAMBLE
    + """
probe "root to its own eyes" '[ "$(id -u)" = 0 ] && [ "$UID" = 0 ]'
probe "no capability" 'grep -q "^CapEff:[[:space:]]*0000000000000000$" /proc/self/status'
probe "no capability to regain" 'grep -q "^CapBnd:[[:space:]]*0000000000000000$" /proc/self/status'
probe "no new privileges" 'grep -q "^NoNewPrivs:[[:space:]]*1$" /proc/self/status'
probe "read its bundle" 'test -r "$(dirname "$0")/.mlnx"'
probe "write its scratch" 'touch "$PWD/mine" && rm "$PWD/mine"'
probe "copy its bundle as root keeps owners" 'cp -a "$(dirname "$0")" "$PWD/copy"'
probe "run a compiler" 'gcc --version'
try "read the site key" "cat {data}/keys/site-secret"
try "read the tokens" "cat /proc/*/environ 2>/dev/null | grep -a -q {token}"
try "write the tree" "touch {data}/repos/pwned"
try "see the database or the keys" "ls -a {data} | grep -q -e ofedrepo.db -e keys -e repos"
try "reach the service" "python3 -c 'import socket; socket.create_connection((\\"127.0.0.1\\", {port}), 2)'"
{host_only}
try "write the bundle" "touch $(dirname "$0")/pwned"
try "write /usr" "touch /usr/pwned"
try "write the kernel sources" "touch {sources}/pwned"
try "mount a tmpfs" "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m"
try "mount a cgroup hierarchy" "mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg"
try "set a release_agent" \\
    "mkdir -p /tmp/rdma && mount -t cgroup -o rdma cgroup /tmp/rdma && echo /pwn > /tmp/rdma/release_agent"
try "see the host's cgroups" "ls /sys/fs/cgroup/memory/ofedrepo || grep -q -e ofedrepo -e libpod /proc/self/cgroup"
try "make a user namespace" "unshare --user --map-root-user true"
try "see the worker" "kill -0 {worker}"
try "ptrace the worker" "python3 -c 'import ctypes, sys; sys.exit(ctypes.CDLL(None).ptrace(16, {worker}, 0, 0) != 0)'"
try "set its own uid" "python3 -c 'import os; os.setuid(1)'"
# Set-ID copies of a shell, owned by the sandbox uid, for a local user to become it later: left in the scratch
cp /bin/sh "$PWD/suid-sh" && chmod 4755 "$PWD/suid-sh" && mkdir -p "$PWD/deeper" && cp /bin/sh "$PWD/deeper/sgid-sh" \
    && chmod 2755 "$PWD/deeper/sgid-sh" && echo "SETID: left"
exit 1
"""
)

LIMITS = (
    PREAMBLE
    + """
cat > "$PWD/bomb.py" <<'EOF'
import os, sys, time
forked = 0
for _ in range(1000):
    try:
        child = os.fork()
    except OSError:
        break
    if child == 0:
        time.sleep(60)
        os._exit(0)
    forked += 1
print(f"FORKED: {{forked}}", flush=True)
EOF
python3 "$PWD/bomb.py"
try "take 400 MiB of memory" "python3 -c 'bytearray(400 * 1024 * 1024)'"
# A burst faster than any meter: 16 files of 32 MiB allocated at once, each below the largest file it may write
for number in $(seq 16); do fallocate -l 32M "$PWD/burst-$number" 2>/dev/null || break; done
echo "BURST: $(du -sm "$PWD" | cut -f1) MiB"
python3 - <<'EOF'
import os, time
for number in range(64):  # up to 2 GiB in files of 32 MiB, far past the scratch cap, as fast as a disk takes it
    with open(f"fill-{{number}}", "wb") as output:
        output.write(bytes(32 * 1024 * 1024))
        output.flush()
        os.fsync(output.fileno())
    print(f"FILLED: {{number + 1}} {{time.time():.2f}}", flush=True)
time.sleep(120)
EOF
exit 0
"""
)

PLANTED = (
    PREAMBLE
    + """
t="${{@: -5:1}}"  # -t <dir>: where the script writes, and where the worker follows its logs
mkdir -p "$t/logs"
ln -s /proc/{worker}/environ "$t/logs/environ.log"
ln -s /proc/self/environ "$t/logs/self.log"
ln -s {data}/ofedrepo.db "$t/logs/database.log"
ln -s {data}/keys/site-secret "$t/logs/key.log"
ln -s /etc/shadow "$t/logs/shadow.log"
ln -s .. "$t/logs/up"
mkfifo "$t/logs/blocking.log"
mkdir -p "$t/real" && echo "an honest line" > "$t/real/honest.log"
ln -s /etc/shadow "$t/MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64-ext.tgz"
sleep 2  # the worker polls the logs twice a second
exit 0
"""
)

FLOOD = """#!/bin/bash
t="${{@: -5:1}}"
printf 'title\\033]0;owned\\007 clip\\033]52;c;cGFzc3dvcmQ=\\007 clear\\033[2J\\033[H c1\\302\\233 31m raw\\233 done\\n'
printf 'in a log \\033]52;c;b3duZWQ=\\033\\\\ end\\n' > "$t/escapes.log"
printf 'bidi \\342\\200\\256txt.exe\\n'  # U+202E: "exe.txt" on screen
sleep 1.5  # the worker polls the logs twice a second
python3 -c 'print(("flood " + "x" * 100 + "\\n") * 50000, end="")'
touch "$t/$(printf 'ext-\\xff\\xfe.tgz')"
exit 0
"""

#: A tree thousands of levels deep (its paths longer than PATH_MAX) with data at the bottom, in the directory
#: whose logs the worker follows: the scratch's size was measured by path (the deep part skipped), the
#: follower's walk reopened every level from the top (a hung worker), and cleanups raised RecursionError.
DEEP = """#!/bin/bash
t="${{@: -5:1}}"
cd "$t" && python3 - <<'EOF'
import os, time
for _ in range(9000):
    os.mkdir("d")
    os.chdir("d")
for number in range(3):
    with open(f"data-{{number}}", "wb") as output:
        output.write(bytes(30 * 1024 * 1024))
        # written back at once: dirty pages count against the container's memory (cgroup v1), and a loaded
        # disk would get the script OOM-killed before the scratch meter stops it for what this test is about
        output.flush()
        os.fsync(output.fileno())
print("DEEP: written", flush=True)
time.sleep(120)
EOF
exit 1
"""

#: Empty files: no byte of data, every one an inode of the data directory's filesystem.
INODES = """#!/bin/bash
python3 - <<'EOF'
import time
for number in range(200_000):
    open(f"empty-{{number}}", "w").close()
print("INODES: all made", flush=True)
time.sleep(120)
EOF
exit 0
"""


@dataclass(frozen=True)
class HostileRun:
    build: dict[str, object]
    log: str
    server: RunningServer

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.log.splitlines() if line.startswith(prefix)]


#: Attempts that make sense where the sandbox shows the host's /etc (the local runner): a container's image has
#: an /etc of its own, whose shadow file is nobody's secret.
HOST_ONLY = {"local": 'try "read /etc/shadow" "grep -q root /etc/shadow"', "podman": ""}


@pytest.fixture(scope="module", params=["local", "podman"])
def sandboxed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose builds have small limits, so that hostile scripts meet them within seconds, for each runner:
    the local sandbox, and podman with a builder image made here (``tests/support/builder_image.py``)."""
    root = tmp_path_factory.mktemp(f"sandboxed-{request.param}")
    sources = root / "kernels"
    make_kernel_sources(sources, TARGET_KERNEL)
    environment = {
        "OFEDREPO_API_TOKENS": TOKEN,
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(sources),
        "OFEDREPO_BUILD_SANDBOX_UID": str(SANDBOX_UID),
        "OFEDREPO_BUILD_MAX_PROCESSES": str(MAX_PROCESSES),
        "OFEDREPO_BUILD_MAX_MEMORY": str(MAX_MEMORY),
        "OFEDREPO_BUILD_MAX_SCRATCH_BYTES": str(MAX_SCRATCH),
        "OFEDREPO_BUILD_LOG_MAX_BYTES": str(LOG_CAP),
        "OFEDREPO_BUILD_KEEP_FAILED_MAX_BYTES": str(MAX_SCRATCH // 2),
    }
    if request.param == "podman":
        environment |= podman_settings(root)
    server = start_server(root / "var", root / "serve.log", environment, worker=True)
    (server.settings.data_dir / "keys" / "site-secret").write_text("the site's private key\n")
    try:
        yield server
    finally:
        stop_server(server)


def runner_of(server: RunningServer) -> str:
    return server.environment.get("OFEDREPO_BUILD_RUNNER", "local")


def run_hostile(server: RunningServer, bundle_dir: Path, work: Path, script: str) -> HostileRun:
    """Register ``bundle_dir`` with ``script`` as its mlnx_add_kernel_support.sh and build it for the kernel."""
    data = server.settings.data_dir
    sources = Path(server.environment["OFEDREPO_KERNEL_SOURCES_ROOT"]) / TARGET_KERNEL
    hostile = work / "hostile" / bundle_dir.name
    shutil.copytree(bundle_dir, hostile, symlinks=True)
    port = server.url.rsplit(":", 1)[1]
    text = script.format(
        data=data,
        token=TOKEN,
        port=port,
        worker=server.process.pid,
        sources=sources,
        host_only=HOST_ONLY[runner_of(server)],
    )
    (hostile / SCRIPT).write_text(text)
    archive = make_tgz(hostile, work / f"{hostile.name}.tgz")
    with archive.open("rb") as stream:
        added = httpx.post(f"{server.url}/api/v1/bundles", files={"file": stream}, headers=HEADERS, timeout=60)
    assert added.status_code == 201, added.text
    asked = httpx.post(
        f"{server.url}/api/v1/repos", json={"kernel": TARGET_KERNEL, "bundle_id": added.json()["id"]}, headers=HEADERS
    )
    assert asked.status_code == 202, asked.text
    build = wait_for(server, asked.json()["build"]["id"], ENDED)
    return HostileRun(build, build_log(server, build["id"]), server)


def containers_of(server: RunningServer) -> list[str]:
    return build_containers(server.environment) if runner_of(server) == "podman" else []


def processes_of(uid: int, mentioning: Path) -> list[str]:
    """Command lines of ``uid``'s processes that name ``mentioning`` (other builds may run on this host)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found += [command] if str(mentioning) in command else []
        except OSError:
            continue
    return found


def test_a_hostile_script_has_no_capability_and_reaches_nothing(
    sandboxed: RunningServer, bundle_dir: Path, tmp_path: Path
) -> None:
    run = run_hostile(sandboxed, bundle_dir, tmp_path, ESCAPES)
    probes, attempts = run.lines("PROBE: "), run.lines("HOSTILE: ")
    assert len(probes) == 8 and all(line.endswith(": ok") for line in probes), run.log
    assert len(attempts) == (17 if runner_of(sandboxed) == "local" else 16), run.log
    assert all(line.endswith(": refused") for line in attempts), attempts
    assert (
        run.build["state"] == "failed" and (" bwrap " if runner_of(sandboxed) == "local" else "podman run") in run.log
    )
    data = sandboxed.settings.data_dir
    assert not (data / "repos" / "pwned").exists() and not list((data / "bundles").rglob("pwned"))
    assert not Path("/usr/pwned").exists()
    assert f"uid {SANDBOX_UID} outside" in run.log
    # The failed build's scratch is kept for a while: without set-ID bits, in a directory nobody else can list.
    assert "SETID: left" in run.log and "are kept in" in run.log, run.log
    assert stat.S_IMODE((data / "work").stat().st_mode) == 0o711
    # What the script could not read through the sandbox, no local user reads on the host either.
    assert stat.S_IMODE((data / "ofedrepo.db").stat().st_mode) == 0o600
    (kept_scratch,) = (data / "work").glob(f"failed-build-{run.build['id']}-*")
    with kept_tree(kept_scratch) as tree:
        kept = [path for path in tree.rglob("*") if path.is_file() and not path.is_symlink()]
        assert any(path.name == "suid-sh" for path in kept), kept
        assert not [path for path in kept if path.stat().st_mode & (stat.S_ISUID | stat.S_ISGID)]


def test_limits_contain_a_fork_bomb_a_memory_hog_and_a_disk_filler(
    sandboxed: RunningServer, bundle_dir: Path, tmp_path: Path
) -> None:
    run = run_hostile(sandboxed, bundle_dir, tmp_path, LIMITS)
    forked_lines = run.lines("FORKED: ")
    assert len(forked_lines) == 1, run.log
    (forked,) = forked_lines
    assert 0 < int(forked.split()[1]) < MAX_PROCESSES, run.log  # the limit, not the loop's 1000, stopped it
    assert run.lines("HOSTILE: ") == ["HOSTILE: take 400 MiB of memory: refused"], run.log
    # Stopped long before 1 GiB, let alone 2; the burst (which may stop it first) took no more than the cap.
    assert all(int(line.split()[1]) < 32 for line in run.lines("FILLED: ")), run.log
    assert run.build["state"] == "failed"
    assert "its scratch directory grew past" in str(run.build["error"]), run.build
    # What the scratch took of the disk at the end is within the cap; kept, within the kept scratch's budget.
    not_kept = re.search(r"scratch \(([0-9]+) bytes\) is not kept: larger than", run.log)
    kept = re.search(r"kept in (\S+) for", run.log)
    assert (not_kept is None) != (kept is None), run.log
    if not_kept:
        assert MAX_SCRATCH // 2 < int(not_kept.group(1)) <= MAX_SCRATCH, run.log
    else:
        assert kept is not None and Path(kept.group(1)).stat().st_blocks * 512 <= MAX_SCRATCH // 2, run.log
    assert not processes_of(SANDBOX_UID, sandboxed.settings.data_dir)  # the bomb's sleepers went with the build
    for hierarchy in ("pids", "memory"):
        instance = DataDir(sandboxed.settings.data_dir).instance
        assert not list((CGROUP_ROOT / hierarchy / CGROUP_PARENT).glob(f"build-{instance}-{run.build['id']}-*"))
    assert not containers_of(sandboxed)  # the container went with the build


def test_the_worker_reads_no_link_fifo_or_file_from_outside_the_script_planted(
    sandboxed: RunningServer, bundle_dir: Path, tmp_path: Path
) -> None:
    run = run_hostile(sandboxed, bundle_dir, tmp_path, PLANTED)
    assert "an honest line" in run.log  # logs are followed: the refusals below are not blindness
    secrets = [TOKEN, "root:", "SQLite format", "the site's private key", "OFEDREPO_DATA_DIR="]
    assert not [secret for secret in secrets if secret in run.log], run.log
    assert run.build["state"] == "failed"
    assert "is a symbolic link" in str(run.build["error"]), run.build


def test_a_deep_tree_or_a_flood_of_empty_files_is_stopped_and_cleaned_up(
    sandboxed: RunningServer, bundle_dir: Path, tmp_path: Path
) -> None:
    for name, script in (("deep", DEEP), ("inodes", INODES)):
        run = run_hostile(sandboxed, bundle_dir, tmp_path / name, script)
        assert run.build["state"] == "failed", run.log
        assert "its scratch directory grew past" in str(run.build["error"]), run.build
        assert "INODES: all made" not in run.log  # stopped long before 200,000 inodes
    work = sandboxed.settings.data_dir / "work"
    for kept in work.glob("failed-build-*"):  # what retention does with them, however deep
        remove_tree(kept)
        assert not kept.exists()
    assert not [entry for entry in work.iterdir() if entry.name.startswith("tool-")]


def test_a_flood_of_output_is_cut_at_the_cap_and_odd_names_are_told_plainly(
    sandboxed: RunningServer, bundle_dir: Path, tmp_path: Path
) -> None:
    run = run_hostile(sandboxed, bundle_dir, tmp_path, FLOOD)
    assert "clip" in run.log and "in a log" in run.log and " end" in run.log  # the text stays
    assert not [character for character in "\x1b\x07\x9b\u202e" if character in run.log]  # its escapes do not
    assert "bidi txt.exe" in run.log
    log_file = sandboxed.settings.data_dir / "builds" / f"{run.build['id']}.log"
    assert log_file.stat().st_size < LOG_CAP + 16 * 1024
    assert "the build log reached its cap" in run.log and "FAILED: " in run.log
    assert run.build["state"] == "failed" and "internal error" not in str(run.build["error"]), run.build
    assert "ext-\\xff\\xfe.tgz" in str(run.build["error"])
