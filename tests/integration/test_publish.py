"""Publishing -ext bundles into the versioned tree, with real rpm, gpg, rpmsign and createrepo_c."""

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import createrepo_c as cr
import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.config import Settings
from ofedrepo.errors import InvalidInput, NotABundle
from ofedrepo.models import RepoVersion
from ofedrepo.repos import queries, signing
from ofedrepo.repos.publish import Publisher
from ofedrepo.rpmfile import read_header
from ofedrepo.storage import DataDir, switch_symlink
from synthetic.bundle import BundleSpec, make_iso
from tests.conftest import OTHER_KERNEL, TARGET_KERNEL, VENV_BIN, variant
from tests.support.kill import kill_when

BUNDLE = BundleSpec().name


def repo_dir(settings: Settings, kernel: str = TARGET_KERNEL) -> Path:
    return settings.data_dir / "repos" / BUNDLE / kernel


def primary_packages(rpms: Path) -> set[str]:
    metadata = cr.Metadata()
    metadata.locate_and_load_xml(str(rpms))
    return {metadata.get(key).location_href for key in metadata.keys()}


def assert_complete(version: Path) -> None:
    """A version directory as DESIGN.md's tree shows it, with metadata for exactly its packages."""
    rpms = version / "RPMS"
    packages = {path.relative_to(rpms).as_posix() for path in rpms.rglob("*.rpm")}
    assert packages and primary_packages(rpms) == packages
    for name in ("RPM-GPG-KEY-Mellanox", "RPM-GPG-KEY-ofedrepo", "mlnx-ofed.repo"):
        assert (version / name).is_file(), name


def test_publishes_the_tree_of_the_design(publisher: Publisher, settings: Settings, ext_tgz: Path) -> None:
    result = publisher.publish(ext_tgz)
    assert (result.bundle_name, result.kernel, result.version, result.created) == (BUNDLE, TARGET_KERNEL, 1, True)
    version = repo_dir(settings) / "1"
    assert_complete(version)
    assert os.readlink(repo_dir(settings) / "latest") == "1"
    assert "stale" not in (version / "RPMS/repodata/repomd.xml").read_text()
    repo_file = (version / "mlnx-ofed.repo").read_text()
    assert f"baseurl=http://127.0.0.1:8000/repos/{BUNDLE}/{TARGET_KERNEL}/1/RPMS\n" in repo_file
    assert "gpgcheck=1\n" in repo_file


def test_every_package_is_signed_by_a_published_key(publisher: Publisher, settings: Settings, ext_tgz: Path) -> None:
    result = publisher.publish(ext_tgz)
    version = result.path
    published_keys = signing.key_ids((version / "RPM-GPG-KEY-Mellanox").read_text(), DataDir(settings.data_dir).home)
    site_key = signing.key_ids((version / "RPM-GPG-KEY-ofedrepo").read_text(), DataDir(settings.data_dir).home)
    assert len(published_keys) == 2 and site_key <= published_keys
    signers = {read_header(path).signer for path in (version / "RPMS").glob("*.rpm")}
    assert None not in signers and signers <= published_keys
    # add-kernel-support output (the rebuilt packages) and the regenerated metadata packages were unsigned
    assert "mlnx-ofa_kernel-modules" in " ".join(result.signed) and not any("rdma-core" in n for n in result.signed)
    assert result.regenerated and all(
        any(name.startswith(f"{r}-") for name in result.signed) for r in result.regenerated
    )


def test_identical_content_answers_with_the_existing_version(
    publisher: Publisher, settings: Settings, ext_tgz: Path, sessions: sessionmaker[Session]
) -> None:
    first = publisher.publish(ext_tgz)
    again = publisher.publish(ext_tgz)
    assert (again.version, again.created, again.repo_id) == (1, False, first.repo_id)
    assert sorted(path.name for path in repo_dir(settings).iterdir()) == ["1", "latest"]
    with sessions() as session:
        assert [version.number for version in queries.get_repo(session, first.repo_id).versions] == [1]


def test_rebuilt_bundle_becomes_version_2_and_version_1_stays(
    publisher: Publisher, settings: Settings, ext_tgz: Path, rebuilt_ext_tgz: Path
) -> None:
    publisher.publish(ext_tgz)
    second = publisher.publish(rebuilt_ext_tgz, kernel=TARGET_KERNEL)
    assert (second.version, second.created) == (2, True)
    assert os.readlink(repo_dir(settings) / "latest") == "2"
    assert_complete(repo_dir(settings) / "1")
    assert_complete(repo_dir(settings) / "2")


def test_iso_and_directory_sources(tmp_path: Path, publisher: Publisher, unpacked_ext: Path, bundle_dir: Path) -> None:
    iso = make_iso(unpacked_ext, tmp_path / f"{unpacked_ext.name}.iso")
    assert publisher.publish(iso).kernel == TARGET_KERNEL
    # Its `distro` says skip-distro-check and an ISO's content has no directory of its own: the name places it.
    anonymous = iso.rename(tmp_path / "ext.iso")
    with pytest.raises(
        NotABundle, match="skip-distro-check .* name it MLNX_OFED_LINUX-5.8-3.0.7.0-<distro>-x86_64-ext"
    ):
        publisher.publish(anonymous)
    # The vendor's own bundle, published as is for its GA kernel: all packages already signed.
    result = publisher.publish(bundle_dir)
    assert (result.kernel, result.signed) == (BundleSpec().ga_kernel, [])


def test_kernel_that_does_not_match_the_modules_is_refused(publisher: Publisher, ext_tgz: Path) -> None:
    with pytest.raises(InvalidInput, match=f"built for {TARGET_KERNEL}, not {OTHER_KERNEL}"):
        publisher.publish(ext_tgz, kernel=OTHER_KERNEL)


def test_hostile_kernel_is_refused_before_any_path_is_made(
    publisher: Publisher, settings: Settings, ext_tgz: Path
) -> None:
    with pytest.raises(InvalidInput, match="invalid kernel release"):
        publisher.publish(ext_tgz, kernel="../../../etc")
    assert list((settings.data_dir / "repos").iterdir()) == []


def test_not_a_bundle(tmp_path: Path, publisher: Publisher) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotABundle, match="no .mlnx file"):
        publisher.publish(tmp_path / "empty")


def cli_environment(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "OFEDREPO_DATA_DIR": str(settings.data_dir),
        "OFEDREPO_DATABASE_URL": settings.resolved_database_url,
    }


def test_concurrent_publishes_never_share_or_skip_a_number(
    tmp_path: Path, settings: Settings, unpacked_ext: Path, sessions: sessionmaker[Session]
) -> None:
    variants = [variant(unpacked_ext, tmp_path, index) for index in range(4)]
    processes = [
        subprocess.Popen(
            [str(VENV_BIN / "ofedrepo"), "publish", str(path)],
            env=cli_environment(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for path in variants
    ]
    outputs = [process.communicate(timeout=300)[0].decode() for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    assert sorted(path.name for path in repo_dir(settings).iterdir()) == ["1", "2", "3", "4", "latest"]
    assert os.readlink(repo_dir(settings) / "latest") == "4"
    with sessions() as session:
        repo = queries.list_repos(session)[0]
        assert [version.number for version in repo.versions] == [1, 2, 3, 4]
        assert len({version.source_digest for version in repo.versions}) == 4


def test_concurrent_publishes_of_identical_content_all_answer_with_one_version(
    settings: Settings, ext_tgz: Path, sessions: sessionmaker[Session]
) -> None:
    """The latecomers find the winner's version under the repo lock they already hold: nobody waits for ever."""
    processes = [
        subprocess.Popen(
            [str(VENV_BIN / "ofedrepo"), "publish", str(ext_tgz), "--json"],
            env=cli_environment(settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]  # fmt: skip
    outputs = [process.communicate(timeout=120)[0].decode() for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    versions = [json.loads(output[output.index("{") :])["version"] for output in outputs]
    assert versions == [1, 1, 1, 1]
    assert sorted(path.name for path in repo_dir(settings).iterdir()) == ["1", "latest"]


def _staged(settings: Settings, pattern: str) -> Callable[[], bool]:
    staging = DataDir(settings.data_dir).staging
    return lambda: any(staging.glob(f"publish*/{pattern}"))


@pytest.mark.parametrize(
    "phase",
    ["packages staged", "metadata written", "metadata signed", "version in place"],
)
def test_killing_a_publish_leaves_no_partial_version(
    tmp_path: Path, settings: Settings, publisher: Publisher, unpacked_ext: Path, phase: str
) -> None:
    """Killed the moment each phase shows on disk: versions are complete or absent, `latest` names one, and the
    next publish takes the following number."""
    if not (repo_dir(settings) / "latest").exists():
        publisher.publish(unpacked_ext)
    before = {entry.name for entry in repo_dir(settings).iterdir()}
    following = str(max(int(name) for name in before if name.isdigit()) + 1)
    reached = {
        "packages staged": _staged(settings, "RPMS/*.rpm"),
        "metadata written": _staged(settings, "RPMS/repodata/repomd.xml"),
        "metadata signed": _staged(settings, "RPMS/repodata/repomd.xml.asc"),
        "version in place": lambda: (repo_dir(settings) / following).exists(),
    }[phase]
    source = variant(unpacked_ext, tmp_path, 0)
    process = subprocess.Popen(
        [str(VENV_BIN / "ofedrepo"), "publish", str(source)],
        env=cli_environment(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    kill_when(process, reached)  # fails unless the phase was reached while the publish ran
    for entry in repo_dir(settings).iterdir():
        # a hidden link being made for `latest` may be left (never served: the tree hides dot entries)
        assert entry.name == "latest" or entry.name.isdigit() or entry.name.startswith(".latest."), entry
        if entry.name.isdigit():
            assert_complete(entry)
    assert (repo_dir(settings) / os.readlink(repo_dir(settings) / "latest")).is_dir()
    final = publisher.publish(variant(unpacked_ext, tmp_path, 9))
    assert final.created and os.readlink(repo_dir(settings) / "latest") == str(final.version)
    assert_complete(final.path)
    assert not list(repo_dir(settings).glob(".latest.*")), "the next publish removes what the killed one left"


def test_leftovers_of_dead_publishes_are_removed(settings: Settings, sessions: sessionmaker[Session]) -> None:
    data = DataDir(settings.data_dir).ensure()
    old, fresh = data.staging / "publish-old", data.staging / "publish-fresh"
    for path in (old, fresh):
        (path / "RPMS").mkdir(parents=True)
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    Publisher(settings, sessions)
    assert not old.exists() and fresh.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["publish", "/nonexistent/bundle.tgz"], "does not exist"),
        (["publish", "/etc/hostname"], "not a readable tar or ISO archive"),
        (["publish", "/etc", "--kernel", "$(reboot)"], "invalid kernel release"),
        (["publish", "/etc"], "not an MLNX_OFED bundle"),
    ],
)
def test_cli_reports_bad_input_in_one_line(settings: Settings, arguments: list[str], message: str) -> None:
    completed = subprocess.run(
        [str(VENV_BIN / "ofedrepo"), *arguments], env=cli_environment(settings), capture_output=True, text=True
    )
    assert completed.returncode == 2
    assert message in completed.stderr and "Traceback" not in completed.stderr
    assert completed.stderr.startswith("error:")


def test_republishing_repairs_a_latest_link_a_crash_never_switched(
    publisher: Publisher, settings: Settings, ext_tgz: Path
) -> None:
    publisher.publish(ext_tgz)
    (repo_dir(settings) / "latest").unlink()  # as if killed between recording version 1 and switching `latest`
    again = publisher.publish(ext_tgz)
    assert (again.version, again.created) == (1, False)
    assert os.readlink(repo_dir(settings) / "latest") == "1"


def test_a_version_renamed_but_never_recorded_is_recorded_by_the_next_publish(
    publisher: Publisher, settings: Settings, ext_tgz: Path, rebuilt_ext_tgz: Path, sessions: sessionmaker[Session]
) -> None:
    """Killed between the rename of version 1 and its transaction's commit: the directory exists, the row does
    not. Publishing the same packages again answers with version 1 (recorded from its ``.version.json``)
    instead of making a version 2; a different set then becomes version 2."""
    first = publisher.publish(ext_tgz)
    with sessions() as session, session.begin():
        session.execute(delete(RepoVersion))  # as if the commit never happened
    (repo_dir(settings) / "latest").unlink()
    again = publisher.publish(ext_tgz)
    assert (again.version, again.created) == (1, False)
    assert sorted(path.name for path in repo_dir(settings).iterdir()) == ["1", "latest"]
    with sessions() as session:
        versions = queries.get_repo(session, first.repo_id).versions
        assert [(version.number, version.package_count) for version in versions] == [(1, first.package_count)]
    assert publisher.publish(rebuilt_ext_tgz, kernel=TARGET_KERNEL).version == 2


def test_recovery_points_latest_at_the_newest_version(
    publisher: Publisher, settings: Settings, ext_tgz: Path, rebuilt_ext_tgz: Path
) -> None:
    """Killed after version 2 was recorded but before `latest` moved to it: the next build of the repo
    (``recover``, which every build runs first) moves it."""
    publisher.publish(ext_tgz)
    second = publisher.publish(rebuilt_ext_tgz, kernel=TARGET_KERNEL)
    switch_symlink(repo_dir(settings) / "latest", "1")
    publisher.recover(second.repo_id, second.bundle_name, TARGET_KERNEL)
    assert os.readlink(repo_dir(settings) / "latest") == "2"


def test_recovery_removes_the_temporary_link_a_killed_switch_left(
    publisher: Publisher, settings: Settings, ext_tgz: Path
) -> None:
    """Killed between making `latest`'s temporary link and renaming it over `latest`: recovery removes the
    leftover, so the repository holds only its versions and `latest`."""
    published = publisher.publish(ext_tgz)
    (repo_dir(settings) / ".latest.0123456789abcdef").symlink_to("1")
    publisher.recover(published.repo_id, published.bundle_name, TARGET_KERNEL)
    assert sorted(path.name for path in repo_dir(settings).iterdir()) == ["1", "latest"]
