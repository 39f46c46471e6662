"""Path imports: opened once below an import directory without following links, copied in while hashed."""

import hashlib
import os
from pathlib import Path

import pytest

from ofedrepo.bundles.store import tree_digest
from ofedrepo.errors import InvalidInput
from ofedrepo.storage import DataDir
from ofedrepo.uploads import discard, import_path, open_importable, take_file


@pytest.fixture
def imports(tmp_path: Path) -> Path:
    root = tmp_path / "imports"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "image.raw").write_bytes(b"image")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "image.raw").write_bytes(b"secret")
    (root / "link.raw").symlink_to(outside / "image.raw")
    (root / "alias.raw").symlink_to(root / "sub" / "image.raw")
    (root / "linked").symlink_to(outside)
    os.mkfifo(root / "fifo.raw")
    return root


def read_all(descriptor: int) -> bytes:
    try:
        return os.read(descriptor, 1 << 20)
    finally:
        os.close(descriptor)


def test_a_file_below_an_import_dir_is_opened(imports: Path) -> None:
    descriptor, name = open_importable(str(imports / "sub" / "image.raw"), [imports])
    assert (read_all(descriptor), name) == (b"image", "image.raw")


def test_an_import_dir_named_through_a_link_is_the_operators_choice(imports: Path, tmp_path: Path) -> None:
    (tmp_path / "configured").symlink_to(imports)
    for text in (tmp_path / "configured" / "sub" / "image.raw", imports / "sub" / "image.raw"):
        descriptor, _ = open_importable(str(text), [tmp_path / "configured"])
        assert read_all(descriptor) == b"image"


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("link.raw", "'link.raw' is a symbolic link"),
        ("alias.raw", "'alias.raw' is a symbolic link"),
        ("linked/image.raw", "'linked' is a symbolic link"),
        ("sub/../link.raw", "'..' is not accepted"),
        ("fifo.raw", "is not a regular file"),
        ("sub", "is not a regular file"),
        ("missing.raw", "no such file"),
        ("sub/image.raw/x", "'image.raw' is not a directory"),
    ],
)
def test_links_and_what_is_not_a_file_are_refused(imports: Path, relative: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        open_importable(f"{imports}/{relative}", [imports])


def test_outside_relative_and_disabled_are_refused(imports: Path, tmp_path: Path) -> None:
    for text, message in ((str(tmp_path / "outside" / "image.raw"), "outside the import directories"),
                          ("sub/image.raw", "must be absolute"), ("", "non-empty")):  # fmt: skip
        with pytest.raises(InvalidInput, match=message):
            open_importable(text, [imports])
    with pytest.raises(InvalidInput, match="disabled"):
        open_importable(str(imports / "sub" / "image.raw"), [])


def test_a_file_is_copied_in_as_hashed_and_stays_sparse(imports: Path, tmp_path: Path) -> None:
    image = imports / "sparse.raw"
    with image.open("wb") as writer:
        writer.write(b"head")
        writer.seek(64 * 1024 * 1024)
        writer.write(b"tail")
    data = DataDir(tmp_path / "var").ensure()
    candidate = import_path(str(image), [imports], lambda fd, name: take_file(fd, name, data))
    assert candidate.path.read_bytes() == image.read_bytes()
    assert candidate.sha256 == hashlib.sha256(image.read_bytes()).hexdigest()
    assert candidate.path.is_relative_to(data.uploads) and candidate.name == "sparse.raw"
    assert candidate.path.stat().st_blocks * 512 < 4 * 1024 * 1024  # not the 64 MiB of zeros
    discard(candidate)
    assert list(data.uploads.iterdir()) == []


def test_a_tree_is_copied_by_descriptors_links_as_links(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "RPMS").mkdir(parents=True)
    (tree / "RPMS" / "a.rpm").write_bytes(b"a")
    (tree / "script.sh").write_text("#!/bin/sh\n")
    (tree / "script.sh").chmod(0o755)
    (tree / os.fsdecode(b"caf\xe9")).write_text("latin-1 name")
    (tree / "out").symlink_to("/etc/passwd")
    (tree / "dir").symlink_to("RPMS")
    copy = tmp_path / "copy"
    digest = tree_digest(tree, copy_to=copy)
    assert digest == tree_digest(copy) == tree_digest(tree)
    assert os.readlink(copy / "out") == "/etc/passwd" and (copy / "dir").is_symlink()
    assert os.access(copy / "script.sh", os.X_OK)
    os.mkfifo(tree / "fifo")
    with pytest.raises(InvalidInput, match="neither a file, a directory nor a link"):
        tree_digest(tree)
