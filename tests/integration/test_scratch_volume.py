"""A build's scratch on a filesystem of its own (``workers.scratch_volume``), with real loop mounts: the cap is a
hard limit, a kept scratch is its image, and what a killed worker left mounted is swept."""

import os
import stat
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.builds import lifecycle
from ofedrepo.errors import BuildFailed
from ofedrepo.models import BuildState
from ofedrepo.storage import DataDir
from ofedrepo.untrusted import ScratchDir
from tests.integration.test_queue import enqueue
from tests.support.kept_scratch import kept_tree
from workers.pipeline import attempt_name, remove_orphan_cgroups, remove_orphan_scratch_volumes
from workers.sandbox import Confinement, RunCgroup
from workers.scratch_volume import ScratchVolume, image_of, mounted_under

CAP = 64 * 1024**2


def test_a_burst_of_allocations_stops_at_the_cap_and_the_kept_image_has_no_set_id_bits(tmp_path: Path) -> None:
    notes: list[str] = []
    volume = ScratchVolume(tmp_path / "scratch", CAP, enabled=True)
    volume.create(notes.append)
    try:
        assert notes == [f"scratch: a filesystem of its own, {CAP} bytes (OFEDREPO_BUILD_MAX_SCRATCH_BYTES)"]
        assert volume.scratch.is_mount() and os.listdir(volume.scratch) == []
        made = 0
        for number in range(16):  # 512 MiB asked for at once, as a hostile script's fallocate burst does
            if subprocess.run(["fallocate", "-l", "32M", str(volume.scratch / f"burst-{number}")]).returncode:
                break
            made += 1
        assert made < 2 and volume.full()
        allocated = sum(path.stat().st_blocks * 512 for path in volume.scratch.iterdir())
        assert allocated <= CAP and image_of(volume.scratch).stat().st_blocks * 512 <= CAP
        shell = volume.scratch / "suid-sh"
        shell.write_bytes(b"")
        shell.chmod(0o4755)
        kept = tmp_path / "failed-build-1-kept.img"
        assert volume.keep_as(kept)
        assert not volume.scratch.is_mount() and not image_of(volume.scratch).exists()
        with kept_tree(kept) as tree:
            assert stat.S_IMODE((tree / "suid-sh").stat().st_mode) == 0o755
    finally:
        volume.release()


def test_a_sparse_output_is_copied_out_as_sparse_and_a_kept_image_counts_what_it_holds(tmp_path: Path) -> None:
    """The tool's files are copied out of its filesystem (another one than the worker's): a 1.9 GB file of
    holes took 1.9 GB of the data disk, 15 times the cap. And data the tool wrote and deleted is not kept."""
    volume = ScratchVolume(tmp_path / "scratch", CAP, enabled=True)
    volume.create(lambda _: None)
    try:
        with open(volume.scratch / "MLNX_OFED_LINUX-ext.tgz", "wb") as sparse:
            sparse.truncate(1900 * 1024**2)
            sparse.write(b"\x1f\x8b")
        with ScratchDir(volume.scratch) as scratch:
            copied = scratch.collect("MLNX_OFED_LINUX-ext.tgz", tmp_path / "private", max_bytes=2 * 1024**3)
        assert copied.stat().st_size == 1900 * 1024**2 and copied.stat().st_blocks * 512 <= 1024**2
        assert copied.read_bytes()[:2] == b"\x1f\x8b"
        (volume.scratch / "MLNX_OFED_LINUX-ext.tgz").unlink()
        (volume.scratch / "written-then-deleted").write_bytes(os.urandom(32 * 1024**2))
        os.sync()
        (volume.scratch / "written-then-deleted").unlink()
        assert volume.kept_size() < 8 * 1024**2
    finally:
        volume.release()


def test_the_filesystem_is_no_larger_than_the_disk_has_free(tmp_path: Path) -> None:
    """A sparse image promised more than the disk held: the tool's writes were lost with a kernel I/O error
    instead of failing. On a disk of 200 MiB it is at most nine tenths of what is free; on one of 40 MiB there
    is no room to build, said so."""
    for size, room in ((200, True), (40, False)):
        disk = tmp_path / f"disk-{size}"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}m", "tmpfs", str(disk)], check=True)
        try:
            notes: list[str] = []
            volume = ScratchVolume(disk / "scratch", 1024**3, enabled=True)
            if not room:
                with pytest.raises(BuildFailed, match="disk has [0-9]+ bytes free: too little"):
                    volume.create(notes.append)
                continue
            volume.create(notes.append)
            try:
                assert volume.size <= 180 * 1024**2 and volume.size < os.statvfs(disk).f_bavail * 4096
                assert any("what the data directory's disk has free" in note for note in notes), notes
            finally:
                volume.release()
        finally:
            subprocess.run(["umount", str(disk)], check=True)


def test_without_the_setting_the_scratch_is_a_plain_directory(tmp_path: Path) -> None:
    notes: list[str] = []
    volume = ScratchVolume(tmp_path / "scratch", CAP, enabled=False)
    volume.create(notes.append)
    assert volume.scratch.is_dir() and not volume.scratch.is_mount() and not volume.full()
    assert notes == [
        "scratch: measured against OFEDREPO_BUILD_MAX_SCRATCH_BYTES, not bounded by a filesystem: "
        "OFEDREPO_BUILD_SCRATCH_FILESYSTEM is off"
    ]


def one_ended_one_running(sessions: sessionmaker[Session]) -> tuple[int, int]:
    """Two builds whose first attempts a worker claimed: one has ended (its worker killed), one runs."""
    dead, running = enqueue(sessions, 2)
    assert lifecycle.claim(sessions, "alive", lease_seconds=600) == dead
    assert lifecycle.claim(sessions, "alive", lease_seconds=600) == running
    lifecycle.finish(sessions, dead, "alive", BuildState.FAILED, error="its worker was killed")
    return dead, running


def test_the_orphan_sweep_detaches_what_a_killed_worker_left_mounted(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    data = DataDir(tmp_path / "var").ensure()
    dead, running = one_ended_one_running(sessions)
    left, building, others = (
        ScratchVolume(data.work / f"tool-{attempt_name(instance, build_id, 1)}-{'0' * 32}", CAP, enabled=True)
        for instance, build_id in ((data.instance, dead), (data.instance, running), ("another0", dead))
    )
    try:
        for volume in (left, building, others):
            volume.create(lambda _: None)
        # The ended build's scratch is an orphan (an attempt releases its own before recording its end); the
        # running one's is its own; another deployment's is never this one's to judge.
        assert remove_orphan_scratch_volumes(data, sessions) == [left.scratch]
        assert not left.scratch.exists() and not left.image.exists()
        assert sorted(mounted_under(data.work)) == sorted([building.scratch, others.scratch])
    finally:
        for volume in (left, building, others):
            volume.mounted = volume.scratch.is_mount()
            volume.release()


def test_the_orphan_sweep_removes_the_cgroups_of_attempts_no_longer_running(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    data = DataDir(tmp_path / "var").ensure()
    dead, running = one_ended_one_running(sessions)
    confinement = Confinement(uid=None, max_processes=16, max_memory=64 * 1024**2, max_scratch=CAP)
    left, building = (
        RunCgroup.create(attempt_name(data.instance, build_id, 1), confinement) for build_id in (dead, running)
    )
    if left is None or building is None:
        pytest.skip("this host gives no cgroup to make")
    try:
        assert remove_orphan_cgroups(data, sessions) == [left.directories[0].name]
        assert not any(directory.exists() for directory in left.directories)
        assert all(directory.exists() for directory in building.directories)
    finally:
        for cgroup in (left, building):
            cgroup.remove()
