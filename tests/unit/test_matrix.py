"""The kernels-by-bundles matrix's cells: a build under way first, then a published version, then a failure."""

from datetime import UTC, datetime

from ofedrepo.builds.matrix import cell, fits
from ofedrepo.kernel import parse_kernel_release
from ofedrepo.kinds import BundleKind
from ofedrepo.models import Build, BuildState, Bundle, Repo, RepoVersion

STARTED = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def build(state: BuildState, error: str | None = None) -> Build:
    return Build(id=7, state=state, error=error, started_at=STARTED, created_at=STARTED)


def test_a_build_under_way_wins_over_an_older_version() -> None:
    running = cell(True, build(BuildState.RUNNING), RepoVersion(number=2), Repo(id=3))
    assert (running.state, running.link, running.since) == ("running", "/ui/builds/7", STARTED)


def test_a_published_version_then_a_failure_then_nothing() -> None:
    published = cell(True, build(BuildState.SUCCEEDED), RepoVersion(number=2), Repo(id=3))
    assert (published.state, published.link, published.note) == ("published", "/ui/repos/3", "version 2")
    failed = cell(True, build(BuildState.FAILED, "no kernel sources for K"), None, None)
    assert (failed.state, failed.link, failed.note) == ("failed", "/ui/builds/7", "no kernel sources for K")
    assert cell(True, None, None, None).state == "not built" and cell(False, None, None, None).state == "does not fit"


def test_a_bundle_fits_the_kernels_of_its_distro_and_arch() -> None:
    bundle = Bundle(name="b", ofed_version="5.8-3.0.7.0", distro="rhel8.6", arch="x86_64", kind=BundleKind.MLNX_OFED)
    assert fits(bundle, parse_kernel_release("4.18.0-372.26.1.el8_6.x86_64"))
    assert not fits(bundle, parse_kernel_release("4.18.0-372.26.1.el8_6.aarch64"))
    assert not fits(bundle, parse_kernel_release("5.14.0-362.8.1.el9_3.x86_64"))
    assert not fits(bundle, parse_kernel_release("6.1.0-13-amd64"))
