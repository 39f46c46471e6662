"""Hostile archives are refused before anything lands outside the destination."""

import io
import os
import random
import tarfile
from pathlib import Path

import pytest

from ofedrepo.bundles.archive import Extraction, Limits, extract
from ofedrepo.bundles.unpack import open_bundle
from ofedrepo.errors import InvalidInput, NotABundle, UnsafeArchive
from ofedrepo.storage import MAX_TREE_DEPTH, DataDir, remove_tree, tree_usage
from synthetic.bundle import make_iso

LIMITS = Limits(max_bytes=10_000, max_members=50)


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o4755  # setuid must not survive
    return info


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([(member("../escape"), b"x")], "climbs out"),
        ([(member("a/../../escape"), b"x")], "climbs out"),
        ([(member("/etc/escape"), b"x")], "absolute path"),
        ([(member("link", tarfile.SYMTYPE, "/etc/passwd"), b"")], "points outside"),
        ([(member("d/link", tarfile.SYMTYPE, "../../x"), b"")], "points outside"),
        ([(member("hard", tarfile.LNKTYPE, "../x"), b"")], "climbs out"),
        ([(member("dev", tarfile.CHRTYPE), b"")], "is a device"),
        ([(member("fifo", tarfile.FIFOTYPE), b"")], "special file"),
        ([(member("big"), b"x" * 20_000)], "more than 10000 bytes"),
        ([(member(f"f{index}"), b"") for index in range(60)], "more than 50 members"),
        ([(member("same"), b"1"), (member("same"), b"2")], "appears twice"),
    ],
)
def test_hostile_members_are_refused(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], message: str
) -> None:
    archive = make_tar(tmp_path / "evil.tgz", members)
    destination = tmp_path / "sandbox" / "out"
    with pytest.raises(UnsafeArchive, match=message):
        extract(archive, destination, LIMITS)
    assert not destination.exists()
    assert not (tmp_path / "escape").exists() and not (tmp_path / "sandbox" / "escape").exists()


def test_a_file_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = make_tar(
        tmp_path / "evil.tgz",
        [(member("dir", tarfile.SYMTYPE, "../../outside"), b""), (member("dir/owned"), b"x")],
    )
    with pytest.raises(UnsafeArchive, match="'dir' appears twice, or inside a file"):
        extract(archive, tmp_path / "out", LIMITS)
    assert list(outside.iterdir()) == []


def test_safe_archive_unpacks_with_inside_links_and_sane_modes(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "good.tgz",
        [
            (member("b/RPMS/a.rpm"), b"rpm"),
            (member("b/latest", tarfile.SYMTYPE, "RPMS/a.rpm"), b""),
            (member("b/copy", tarfile.LNKTYPE, "b/RPMS/a.rpm"), b""),
        ],
    )
    extract(archive, tmp_path / "out", LIMITS)
    assert (tmp_path / "out/b/latest").read_bytes() == b"rpm"
    assert (tmp_path / "out/b/copy").read_bytes() == b"rpm"
    assert (tmp_path / "out/b/RPMS/a.rpm").stat().st_mode & 0o7777 == 0o755


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"this is not a tarball " * 2000)
    with pytest.raises(InvalidInput, match="not a readable tar or ISO archive"):
        extract(junk, tmp_path / "out", LIMITS)


@pytest.mark.parametrize(
    "links",
    [
        # Each link's target stays inside as text, but the next one is made through the previous one.
        [("sub/up", ".."), ("sub/up/e1", ".."), ("sub/up/e1/e2", "..")],
        [("sub/up", ".."), ("sub/up/escape", "x")],
        # The target is reached through an earlier link: textually inside, really outside.
        [("sub/up", ".."), ("out", "sub/up/../..")],
        # A link to nothing yet, through a link: `d/..` is not `.` when d is a link (the target would exist later).
        [("a/b/d", "../.."), ("a/b/later", "d/../../../../FUTURE/x")],
        # A link to nothing yet that climbs below a missing name.
        [("a/later", "missing/../../../x")],
    ],
)
def test_chained_links_never_reach_outside(tmp_path: Path, links: list[tuple[str, str]]) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    members = [
        (member("b/sub/file"), b"x"),
        *((member(f"b/{name}", tarfile.SYMTYPE, target), b"") for name, target in links),
    ]
    archive = make_tar(tmp_path / "chain.tgz", members)
    with pytest.raises(UnsafeArchive, match="link"):
        extract(archive, sandbox / "out", LIMITS)
    assert list(sandbox.iterdir()) == [] and sorted(path.name for path in tmp_path.iterdir()) == [
        "chain.tgz",
        "sandbox",
    ]


def never_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make writing any member's bytes fail the test: refusals must come from the survey of the headers."""

    def write(*arguments: object) -> None:
        raise AssertionError("a member was written before the archive was refused")

    monkeypatch.setattr(Extraction, "regular", write)


def test_a_bomb_is_refused_before_a_byte_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small tgz whose member claims far more than the archive's own size: refused by the survey."""
    bomb = tmp_path / "bomb.tgz"
    with tarfile.open(bomb, "w:gz", compresslevel=9) as tar:
        info = tarfile.TarInfo("b/zeros")
        info.size = 200 * 1024 * 1024
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert bomb.stat().st_size < 1024 * 1024
    never_written(monkeypatch)
    with pytest.raises(UnsafeArchive, match="more than 67108864 bytes"):
        extract(bomb, tmp_path / "out", Limits(max_bytes=10**12, max_members=10))
    assert not (tmp_path / "out").exists()


def test_an_archive_that_is_not_a_bundle_is_refused_before_it_is_unpacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many members, none a bundle's marker: refused from the headers, with what a bundle would have."""
    archive = make_tar(tmp_path / "photos.tgz", [(member(f"photos/{index}.jpg"), b"x" * 100) for index in range(40)])
    never_written(monkeypatch)
    data = DataDir(tmp_path / "var").ensure()
    with pytest.raises(NotABundle, match="no .mlnx file at its top"):
        with open_bundle(archive, data, LIMITS, "upstream"):
            pass
    assert list(data.work.iterdir()) == []


def test_hard_links_count_as_the_copies_they_unpack_to(tmp_path: Path) -> None:
    """A 62 KB tgz of one 60 MiB file and 12 hard links to it unpacked to 781 MB: each link was copied, uncounted."""
    limits = Limits(max_bytes=64 * 1024 * 1024, max_members=50)
    data = bytes(6 * 1024 * 1024)
    members = [(member("big"), data), *((member(f"copy{index}", tarfile.LNKTYPE, "big"), b"") for index in range(12))]
    archive = make_tar(tmp_path / "links.tgz", members)
    with pytest.raises(UnsafeArchive, match="more than 67108864 bytes"):
        extract(archive, tmp_path / "out", limits)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([(member("x"), b"1"), (member("x/y"), b"2")], "appears twice, or inside a file"),
        ([(member("n" * 300), b"1")], "deeper or longer than a filesystem takes"),
        ([(member("/".join(["d"] * 300) + "/f"), b"1")], "deeper or longer than a filesystem takes"),
        ([(member("/".join(["d" * 250] * 14)), b"1")], "too long a path"),
        (
            [(member("l0", tarfile.SYMTYPE, "f"), b""), (member("f"), b"1")]
            + [(member(f"l{index}", tarfile.SYMTYPE, f"l{index - 1}"), b"") for index in range(1, 1200)],
            "points outside",
        ),
    ],
    ids=["file-then-inside-it", "long-name", "deep", "long-path", "1200-chained-links"],
)
def test_members_a_filesystem_cannot_take_are_refused_not_500s(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], message: str
) -> None:
    """Each of these reached a client as a 500 (FileExistsError, ENAMETOOLONG, RecursionError)."""
    archive = make_tar(tmp_path / "odd.tgz", members)
    with pytest.raises(UnsafeArchive, match=message):
        extract(archive, tmp_path / "out", Limits(max_bytes=10**9, max_members=5000))
    assert not (tmp_path / "out").exists()


def test_a_mutated_iso_is_refused_or_read_never_a_crash(tmp_path: Path, bundle_dir: Path) -> None:
    """pycdlib, a parser of hostile bytes, raised KeyError on one mutated image (a 500): 200 seeded mutations of
    a real ISO give an answer or a refusal each, nothing else."""
    base = bytearray(make_iso(bundle_dir, tmp_path / "base.iso").read_bytes())
    generator = random.Random(18)
    outcomes = []
    for index in range(200):
        data = bytearray(base)
        for _ in range(generator.randint(1, 12)):
            position = generator.randrange(32768, min(len(data), 32768 + 60000))
            data[position] = generator.randrange(256)
        mutated = tmp_path / f"mutated-{index}.iso"
        mutated.write_bytes(bytes(data))
        try:
            extract(mutated, tmp_path / f"out-{index}", Limits(max_bytes=10**9, max_members=20_000))
            outcomes.append("read")
        except (InvalidInput, UnsafeArchive):
            outcomes.append("refused")
        remove_tree(tmp_path / f"out-{index}")
        mutated.unlink()
    assert len(outcomes) == 200 and "refused" in outcomes


def test_a_tree_thousands_of_levels_deep_is_measured_and_removed(tmp_path: Path) -> None:
    """A build's script made 1200 (and 9000) levels: sizes were skipped past 4096 characters of path, and
    shutil.rmtree raised RecursionError in every cleanup, then at the service's start."""
    root = tmp_path / "deep"
    root.mkdir()
    current = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):
        os.mkdir("d", dir_fd=current)
        following = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=current)
        os.close(current)
        current = following
    with os.fdopen(os.open("payload", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=current), "wb") as payload:
        payload.write(b"x" * 8192)
    os.close(current)
    usage = tree_usage(root)
    assert usage.too_deep and usage.entries > MAX_TREE_DEPTH  # walked as deep as it goes, and says it went no further
    shallow = tree_usage(root, max_depth=5000)
    assert not shallow.too_deep and shallow.entries == 3002 and shallow.bytes >= 8192
    remove_tree(root)
    assert not root.exists()
