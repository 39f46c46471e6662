"""Kernel feeds on SQLite and PostgreSQL: priorities in the queue, hostile feeds, and (through the running
server and its worker) a loopback mirror into which a new kernel-devel package is dropped."""

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.builds import feeds, lifecycle, mirrors, requests
from ofedrepo.config import MirrorSource, Settings
from ofedrepo.db import transaction
from ofedrepo.models import Build, Bundle, KernelFeed, Priority
from synthetic import bundle as synthetic_bundle
from synthetic.bundle import BundleSpec, add_kernel_devel, make_bundle, make_kernel_sources, make_tgz
from tests.conftest import RunningServer, start_server, stop_server
from tests.integration.test_pipeline import ENDED, build_log, request, upload, wait_for
from tests.support.kernel_feed import age, primary_xml, serve, write_metadata

FEED_KERNELS = ["4.18.0-372.10.1.el8_6.x86_64", "4.18.0-372.20.1.el8_6.x86_64", "4.18.0-372.30.1.el8_6.x86_64"]
ASKED_KERNEL = "4.18.0-372.26.1.el8_6.x86_64"  # not in the feed: a person asks for it, with local sources


def add_bundle(sessions: sessionmaker[Session], version: str = "5.8-3.0.7.0", distro: str = "rhel8.6") -> int:
    with transaction(sessions) as session:
        bundle = Bundle(
            name=f"MLNX_OFED_LINUX-{version}-{distro}-x86_64", ofed_version=version, distro=distro,
            arch="x86_64", sha256=f"{version}{distro}".ljust(64, "0"), path="/nonexistent",
        )  # fmt: skip
        session.add(bundle)
        session.flush()
        return bundle.id


def build(sessions: sessionmaker[Session], build_id: int) -> Build:
    with sessions() as session:
        found = session.get(Build, build_id)
        assert found is not None
        return found


def feed_row(sessions: sessionmaker[Session], url: str) -> KernelFeed:
    with sessions() as session:
        row = session.scalars(select(KernelFeed).where(KernelFeed.url == url)).one()
        session.expunge(row)
        return row


def test_a_request_is_claimed_before_what_a_feed_queued_and_lifts_what_it_shares(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    bundle_id = add_bundle(sessions)
    fed = []
    for kernel in FEED_KERNELS[:2]:
        with sessions() as session:
            asked = requests.RepoRequest(kernel=kernel, bundle_id=bundle_id, priority=Priority.FEED, feed_id=None)
            fed.append(requests.request_repo(session, settings, asked))
    assert all(outcome.queued for outcome in fed)
    with sessions() as session:
        person = requests.request_repo(session, settings, requests.RepoRequest(kernel=ASKED_KERNEL))
    assert lifecycle.claim(sessions, "w", lease_seconds=60) == person.build_id  # newer, but a person's

    with sessions() as session:  # a person asks for what the feed queued: shared, and lifted
        shared = requests.request_repo(session, settings, requests.RepoRequest(kernel=FEED_KERNELS[1]))
    assert shared.build_id == fed[1].build_id and not shared.queued
    assert build(sessions, fed[1].build_id).priority == Priority.REQUEST  # type: ignore[arg-type]
    assert lifecycle.claim(sessions, "w", lease_seconds=60) == fed[1].build_id
    assert lifecycle.claim(sessions, "w", lease_seconds=60) == fed[0].build_id


@pytest.fixture
def answers() -> list[tuple[str, int]]:
    return []


@pytest.fixture
def mirror(tmp_path: Path, answers: list[tuple[str, int]]) -> Iterator[tuple[Path, str]]:
    repo = tmp_path / "mirror"
    repo.mkdir()
    with serve(repo, answers) as url:
        yield repo, url


def poll_once(sessions: sessionmaker[Session], settings: Settings, url: str) -> feeds.PollReport:
    configured = settings.model_copy(
        update={"kernel_feeds": [MirrorSource(url=url, gpgcheck=False)], "kernel_feed_max_metadata": 1024 * 1024}
    )
    (report,) = feeds.poll_due_feeds(sessions, configured, settings.data_dir / "work")
    with transaction(sessions) as session:  # due again at once, for the next poll of the test
        session.query(KernelFeed).update({KernelFeed.next_poll_at: None})
    return report


def test_a_feed_is_read_conditionally_and_bounded_per_minor_release(
    sessions: sessionmaker[Session], settings: Settings, mirror: tuple[Path, str], answers: list[tuple[str, int]]
) -> None:
    repo, url = mirror
    for version, distro in (("5.8-3.0.7.0", "rhel8.6"), ("23.10-1.1.9.0", "rhel8.6"), ("5.8-3.0.7.0", "rhel8.8")):
        add_bundle(sessions, version, distro)
    kernels = [
        ("4.18.0", "372.9.1.el8_6", "x86_64"),
        ("4.18.0", "372.26.1.el8_6", "x86_64"),
        ("4.18.0", "372.32.1.el8_6", "x86_64"),
        ("4.18.0", "372.41.1.el8_6", "x86_64"),
        ("4.18.0", "477.10.1.el8_8", "x86_64"),
        ("5.14.0", "70.13.1.el9_0", "x86_64"),  # fits no bundle: found, not queued
    ]
    write_metadata(repo, primary_xml(kernels))
    age(repo)  # a mirror updated an hour ago: its Last-Modified is a validator
    report = poll_once(sessions, settings, url)
    assert report.error is None and report.changed
    assert report.kernels == [
        "4.18.0-372.26.1.el8_6.x86_64", "4.18.0-372.32.1.el8_6.x86_64", "4.18.0-372.41.1.el8_6.x86_64",
        "4.18.0-477.10.1.el8_8.x86_64", "5.14.0-70.13.1.el9_0.x86_64",
    ]  # fmt: skip
    # each el8_6 kernel for each of the two rhel8.6 bundles, the el8_8 one for the rhel8.8 bundle; el9: none fits
    assert len(report.queued) == 3 * 2 + 1
    assert all(build(sessions, build_id).priority == Priority.FEED for build_id in report.queued)
    row = feed_row(sessions, url)
    assert row.builds_queued == 7 and row.kernels == report.kernels and row.polled_at and row.changed_at

    before = len(answers)
    again = poll_once(sessions, settings, url)  # nothing changed: a 304, nothing queued
    assert not again.changed and again.queued == [] and again.error is None
    assert first_after(answers, before) == ("/repodata/repomd.xml", 304)
    assert feed_row(sessions, url).builds_queued == 7


def first_after(answers: list[tuple[str, int]], before: int) -> tuple[str, int]:
    """The poll's own first answer (the poll then retries keeping the sources it could not keep: more reads)."""
    return answers[before]


def test_a_change_within_the_second_it_was_read_is_not_missed(
    sessions: sessionmaker[Session], settings: Settings, mirror: tuple[Path, str], answers: list[tuple[str, int]]
) -> None:
    """A mirror rewritten twice within one second has the same Last-Modified both times: such a date is no
    validator, and the primary's checksum tells the two apart."""
    repo, url = mirror
    add_bundle(sessions)
    write_metadata(repo, primary_xml([("4.18.0", "372.26.1.el8_6", "x86_64")]))
    assert poll_once(sessions, settings, url).kernels == ["4.18.0-372.26.1.el8_6.x86_64"]
    before = len(answers)
    unchanged = poll_once(sessions, settings, url)
    assert not unchanged.changed and first_after(answers, before) == ("/repodata/repomd.xml", 200)  # unconditional
    write_metadata(repo, primary_xml([("4.18.0", "372.26.1.el8_6", "x86_64"), ("4.18.0", "372.32.1.el8_6", "x86_64")]))
    changed = poll_once(sessions, settings, url)
    assert changed.changed and changed.kernels[-1] == "4.18.0-372.32.1.el8_6.x86_64" and len(changed.queued) == 1


@pytest.mark.parametrize(
    ("hostile", "reason"),
    [
        ("not xml", mirrors.NOT_METADATA),
        ("wrong checksum", mirrors.CHECKSUM_MISMATCH),
        ("claims 5 GB", mirrors.TOO_LARGE),
        ("gzip bomb", mirrors.TOO_LARGE),
        ("broken primary", mirrors.NOT_METADATA),
        ("no repodata", mirrors.HTTP_ERROR),
        ("location out of the repository", mirrors.LOCATION_REFUSED),
    ],
)
def test_a_hostile_feed_is_refused_with_its_reason_and_queues_nothing(
    sessions: sessionmaker[Session], settings: Settings, mirror: tuple[Path, str], hostile: str, reason: str
) -> None:
    repo, url = mirror
    add_bundle(sessions)
    good = primary_xml([("4.18.0", "372.26.1.el8_6", "x86_64")])
    if hostile == "not xml":
        (repo / "repodata").mkdir()
        (repo / "repodata" / "repomd.xml").write_text("<repomd><data type='primary'>")
    elif hostile == "wrong checksum":
        write_metadata(repo, good, checksum="0" * 64)
    elif hostile == "claims 5 GB":
        write_metadata(repo, good, declared_size=5 * 1024**3)
    elif hostile == "gzip bomb":  # 20 MB of XML whitespace, a few KB on the wire
        write_metadata(repo, good.replace(b"<package", b" " * 20 * 1024**2 + b"<package", 1))
    elif hostile == "broken primary":
        write_metadata(repo, good[: len(good) // 2])
    elif hostile == "location out of the repository":
        write_metadata(repo, good, location="../../../etc/passwd")
    report = poll_once(sessions, settings, url)
    assert report.error == reason  # the kind of failure only: the details are in the log
    assert report.queued == []
    assert feed_row(sessions, url).error == report.error
    with sessions() as session:
        assert session.scalars(select(Build)).all() == []


def test_kernel_strings_that_fail_the_grammar_are_refused_one_by_one(
    sessions: sessionmaker[Session], settings: Settings, mirror: tuple[Path, str]
) -> None:
    repo, url = mirror
    add_bundle(sessions)
    hostile = [
        ("4.18.0", "372.26.1.el8_6", "x86_64"),
        ("4.18.0", "372.$(reboot).el8_6", "x86_64"),
        ("4.18.0", "../../../../etc", "x86_64"),
        ("4.18.0", "372.1.el8_6 x", "x86_64"),
        ("4.18.0", "3" * 300, "x86_64"),
    ]
    write_metadata(repo, primary_xml(hostile))
    report = poll_once(sessions, settings, url)
    assert report.error is None and report.kernels == ["4.18.0-372.26.1.el8_6.x86_64"]
    assert len(report.refused) == 4 and len(report.queued) == 1


@pytest.fixture(scope="module")
def fed_service(tmp_path_factory: pytest.TempPathFactory, bundle_tgz: Path) -> Iterator[tuple[RunningServer, Path]]:
    """A server whose one-slot worker polls a loopback mirror every second; the mirror starts with one kernel."""
    root = tmp_path_factory.mktemp("feed-service")
    mirror = root / "mirror"
    add_kernel_devel(mirror, FEED_KERNELS[0])
    sources = root / "kernels"
    make_kernel_sources(sources, ASKED_KERNEL)
    with serve(mirror) as feed_url:
        environment = {
            "OFEDREPO_KERNEL_FEEDS": f"{feed_url} gpgcheck=0",
            "OFEDREPO_KERNEL_FEED_INTERVAL": "1",
            "OFEDREPO_KERNEL_FEED_KEEP": "2",
            "OFEDREPO_KERNEL_SOURCES_ROOT": str(sources),
            "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
        }
        running = start_server(root / "var", root / "serve.log", environment, worker=True)
        try:
            yield running, mirror
        finally:
            stop_server(running)


def kept_sources(server: RunningServer) -> list[dict[str, str]]:
    return list(httpx.get(f"{server.url}/api/v1/kernel-sources", timeout=10).json())


def kept_kernels(server: RunningServer) -> list[str]:
    return [entry["kernel"] for entry in kept_sources(server)]


def builds(server: RunningServer) -> list[dict[str, object]]:
    return list(httpx.get(f"{server.url}/api/v1/builds", timeout=10).json())


def wait_for_feed_builds(server: RunningServer, count: int, timeout: float = 60) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fed = [build for build in builds(server) if build["feed_id"] is not None]
        if len(fed) >= count:
            return sorted(fed, key=lambda build: int(build["id"]))  # type: ignore[call-overload]
        time.sleep(0.2)
    raise AssertionError(f"the feed queued {len(fed)} build(s), not {count}: {builds(server)}")


def test_a_kernel_dropped_into_a_feed_is_built_before_anyone_asks(
    fed_service: tuple[RunningServer, Path], bundle_tgz: Path
) -> None:
    server, mirror = fed_service
    assert upload(server, "bundles", bundle_tgz).status_code == 201
    (first,) = wait_for_feed_builds(server, 1)
    assert first["kernel"] == FEED_KERNELS[0] and first["priority"] == Priority.FEED
    done = wait_for(server, int(first["id"]), ENDED, timeout=120)  # type: ignore[call-overload]
    log = build_log(server, int(first["id"]))  # type: ignore[call-overload]
    assert done["state"] == "succeeded", log
    feed_url = server.environment["OFEDREPO_KERNEL_FEEDS"].split()[0]
    kept = httpx.get(f"{server.url}/api/v1/kernel-sources", timeout=10).json()
    assert (FEED_KERNELS[0], True) in [(entry["kernel"], entry["url"].startswith(feed_url)) for entry in kept], kept

    add_kernel_devel(mirror, FEED_KERNELS[1], build_seconds=6)  # slow: a person will ask meanwhile
    add_kernel_devel(mirror, FEED_KERNELS[2])
    second, third = wait_for_feed_builds(server, 3)[1:]
    assert (second["kernel"], third["kernel"]) == (FEED_KERNELS[1], FEED_KERNELS[2])
    wait_for(server, int(second["id"]), {"running"}, timeout=60)  # type: ignore[call-overload]
    asked = request(server, kernel=ASKED_KERNEL)
    assert asked.status_code == 202 and asked.json()["build"]["priority"] == Priority.REQUEST
    person = wait_for(server, asked.json()["build"]["id"], ENDED, timeout=120)
    slow = wait_for(server, int(second["id"]), ENDED, timeout=120)  # type: ignore[call-overload]
    last = wait_for(server, int(third["id"]), ENDED, timeout=120)  # type: ignore[call-overload]
    assert person["state"] == slow["state"] == last["state"] == "succeeded"
    # The one slot was busy with the slow feed build: it made way (and ran again afterwards, its preempted
    # attempt not counted), so the person waited seconds, not for the whole build, and went before the rest.
    assert "a person's request is waiting for a slot" in build_log(server, int(second["id"]))  # type: ignore[call-overload]
    assert person["finished_at"] < slow["finished_at"] and slow["attempts"] == 1  # type: ignore[operator]
    assert person["started_at"] < last["started_at"]  # type: ignore[operator]

    feed = httpx.get(f"{server.url}/api/v1/feeds", timeout=10).json()[0]
    assert feed["kernels"] == FEED_KERNELS[1:] and feed["builds_queued"] == 3 and feed["error"] is None
    count = len(builds(server))
    answered = request(server, kernel=FEED_KERNELS[2])  # a DIB build asking now: answered at once
    assert answered.status_code == 200 and len(builds(server)) == count
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert f'ofedrepo_kernel_feed_builds_queued_total{{feed="{feed["url"]}"}} 3.0' in metrics
    assert f'ofedrepo_kernel_feed_failing{{feed="{feed["url"]}"}} 0.0' in metrics
    page = httpx.get(f"{server.url}/ui/feeds", timeout=10).text
    assert feed["url"] in page and FEED_KERNELS[2] in page


def test_a_bundle_registered_after_a_poll_gets_its_feed_builds_at_once(tmp_path: Path, bundle_tgz: Path) -> None:
    """The feed polls once an hour: the bundle's builds for what it already found are queued by the upload
    itself, not by the next poll."""
    mirror = tmp_path / "mirror"
    add_kernel_devel(mirror, FEED_KERNELS[0])
    with serve(mirror) as feed_url:
        environment = {
            "OFEDREPO_KERNEL_FEEDS": f"{feed_url} gpgcheck=0",
            "OFEDREPO_KERNEL_FEED_INTERVAL": "3600",
            "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
        }
        server = start_server(tmp_path / "var", tmp_path / "serve.log", environment, worker=True)
        try:
            feeds_url = f"{server.url}/api/v1/feeds"
            wait_until(lambda: [feed for feed in httpx.get(feeds_url, timeout=10).json() if feed["polled_at"]])
            assert builds(server) == []
            assert upload(server, "bundles", bundle_tgz).status_code == 201
            fed = [build for build in builds(server) if build["feed_id"] is not None]
            assert [build["kernel"] for build in fed] == [FEED_KERNELS[0]]
            # Counted as the feed's, in its answer and its metric, as a poll's builds are.
            (feed,) = httpx.get(feeds_url, timeout=10).json()
            assert feed["builds_queued"] == 1, feed
            metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
            assert f'ofedrepo_kernel_feed_builds_queued_total{{feed="{feed["url"]}"}} 1.0' in metrics, metrics
        finally:
            stop_server(server)


def wait_until(probe: Callable[[], object], timeout: float = 60) -> object:
    """``probe``'s first true answer, polled for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = probe()
        if answer:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"nothing true within {timeout} s")


def test_el9_feeds_follow_appstream_and_keep_the_sources_a_mirror_dropped(
    tmp_path: Path, test_key: synthetic_bundle.TestKey
) -> None:
    """EL9 keeps kernel-devel in AppStream, not BaseOS (NVIDIA/gpu-driver-container#793), and Rocky 9 keeps only
    the newest kernel of a minor release (rocky-linux/wiki.rockylinux.org docs/rocky/version.md): a build for
    the kernel the mirror then dropped, asked later for another bundle, still has its sources."""
    old_kernel, new_kernel = "5.14.0-427.31.1.el9_4.x86_64", "5.14.0-427.42.1.el9_4.x86_64"
    baseos, appstream, rt = tmp_path / "BaseOS", tmp_path / "AppStream", tmp_path / "RT"
    for empty in (baseos, rt):  # BaseOS holds kernel and kernel-core only: no devel; RT gets its kernel later
        empty.mkdir()
        subprocess.run(["createrepo_c", "--quiet", str(empty)], check=True)
    add_kernel_devel(appstream, old_kernel)
    first, second = (
        make_tgz(bundle, tmp_path / f"{bundle.name}.tgz")
        for bundle in (
            make_bundle(BundleSpec(version, "rhel9.4", ga_kernel="5.14.0-427.13.1.el9_4.x86_64"), test_key, tmp_path)
            for version in ("24.10-1.1.4.0", "24.10-2.1.8.0")
        )
    )
    with serve(baseos) as baseos_url, serve(appstream) as appstream_url, serve(rt) as rt_url:
        environment = {
            "OFEDREPO_KERNEL_FEEDS": f"{baseos_url} gpgcheck=0,{appstream_url} gpgcheck=0,{rt_url} gpgcheck=0",
            "OFEDREPO_KERNEL_FEED_INTERVAL": "1",
            "OFEDREPO_KERNEL_FEED_KEEP": "1",
            "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
        }
        server = start_server(tmp_path / "var", tmp_path / "serve.log", environment, worker=True)
        try:
            # no bundle yet: the poll keeps the kernel's sources all the same, before the mirror can drop them
            wait_until(lambda: kept_kernels(server) == [old_kernel])
            assert upload(server, "bundles", first).status_code == 201
            (built,) = wait_for_feed_builds(server, 1)
            assert built["kernel"] == old_kernel
            done = wait_for(server, int(built["id"]), ENDED, timeout=180)  # type: ignore[call-overload]
            assert done["state"] == "succeeded", build_log(server, int(built["id"]))  # type: ignore[call-overload]

            add_kernel_devel(appstream, new_kernel)  # the mirror ships a newer kernel of 9.4 and drops the old one
            for package in (appstream / "Packages").glob(f"kernel-devel-{old_kernel.rsplit('.', 1)[0]}*.rpm"):
                package.unlink()
            subprocess.run(["createrepo_c", "--quiet", str(appstream)], check=True)
            newer = wait_for_feed_builds(server, 2)[1]
            assert newer["kernel"] == new_kernel

            registered = upload(server, "bundles", second)
            assert registered.status_code == 201, registered.text
            asked = request(server, kernel=old_kernel, bundle_id=registered.json()["id"])
            assert asked.status_code == 202, asked.text
            again = wait_for(server, asked.json()["build"]["id"], ENDED, timeout=180)
            log = build_log(server, asked.json()["build"]["id"])
            assert again["state"] == "succeeded" and "(downloaded earlier)" in log, log
            assert set(kept_kernels(server)) == {old_kernel, new_kernel}

            # EL9's RT kernel: kernel-rt-devel for <ver>-<rel>.<arch>+rt, modules whose vermagic is exactly that.
            rt_kernel = "5.14.0-427.42.1.el9_4.x86_64+rt"
            add_kernel_devel(rt, rt_kernel)
            rt_builds = [build for build in wait_for_feed_builds(server, 5) if build["kernel"] == rt_kernel]
            assert len(rt_builds) == 2  # one per bundle
            rt_logs = ""
            for rt_build in rt_builds:
                ended = wait_for(server, int(rt_build["id"]), ENDED, timeout=180)  # type: ignore[call-overload]
                rt_log = build_log(server, int(rt_build["id"]))  # type: ignore[call-overload]
                assert ended["state"] == "succeeded", rt_log  # publishing checked every vermagic is rt_kernel
                rt_logs += rt_log
            assert rt_logs.count(f"kernel sources: downloading {rt_url}") <= 1, rt_logs  # by the feed or a build
            (rt_sources,) = [entry for entry in kept_sources(server) if entry["kernel"] == rt_kernel]
            assert rt_sources["package"].startswith("kernel-rt-devel-") and rt_sources["url"].startswith(rt_url)
        finally:
            stop_server(server)
