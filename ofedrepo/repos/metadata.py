"""Yum repository metadata, generated with the createrepo_c Python bindings.

Metadata is always generated afresh from the packages actually published, never copied from a bundle
(whose ``repodata/`` may describe other packages). File names carry their checksum, as the createrepo_c
CLI writes them, so every file but ``repomd.xml`` is immutable and safe to cache forever.
"""

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import createrepo_c as cr

from ofedrepo.errors import InvalidInput

REPODATA = "repodata"
#: Threads for reading packages: createrepo_c and librpm do the work in C, so a few more than the cores.
IO_THREADS = min(8, (os.cpu_count() or 1) + 1)


def _read_package(rpms_dir: Path, relative: str) -> "cr.Package":
    try:
        return cr.package_from_rpm(str(rpms_dir / relative), checksum_type=cr.SHA256, location_href=relative)
    except cr.CreaterepoCError as error:
        raise InvalidInput(f"{relative}: createrepo_c cannot read this package ({error})") from None


def write_repodata(
    rpms_dir: Path,
    packages: list[str],
    on_package: Callable[[], None] | None = None,
) -> None:
    """Write ``rpms_dir/repodata/`` for ``packages`` (paths relative to ``rpms_dir``).

    Reading and checksumming packages is done by createrepo_c's C code on a thread pool; the XML files
    are written in package order so the output does not depend on scheduling.
    """
    repodata = rpms_dir / REPODATA
    repodata.mkdir()
    ordered = sorted(packages)
    paths = {name: repodata / f"{name}.xml.gz" for name in ("primary", "filelists", "other")}
    primary = cr.PrimaryXmlFile(str(paths["primary"]))
    filelists = cr.FilelistsXmlFile(str(paths["filelists"]))
    other = cr.OtherXmlFile(str(paths["other"]))
    for xml_file in (primary, filelists, other):
        xml_file.set_num_of_pkgs(len(ordered))
    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        for package in pool.map(lambda relative: _read_package(rpms_dir, relative), ordered):
            primary.add_pkg(package)
            filelists.add_pkg(package)
            other.add_pkg(package)
            if on_package:
                on_package()
    for xml_file in (primary, filelists, other):
        xml_file.close()

    repomd = cr.Repomd()
    revision = str(int(time.time()))
    repomd.set_revision(revision)
    for name, path in paths.items():
        record = cr.RepomdRecord(name, str(path))
        record.fill(cr.SHA256)
        record.rename_file()
        repomd.set_record(record)
    (repodata / "repomd.xml").write_text(repomd.xml_dump())
