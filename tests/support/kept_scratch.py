"""Reading a failed build's kept scratch: a directory, or the image of the filesystem it had to itself."""

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def kept_tree(kept: Path) -> Iterator[Path]:
    """``kept`` itself, or its image mounted read-only (as the README tells an operator) for the block."""
    if kept.is_dir():
        yield kept
        return
    with tempfile.TemporaryDirectory() as mount_point:
        subprocess.run(["mount", "-o", "loop,ro,nosuid,nodev,noexec", str(kept), mount_point], check=True)
        try:
            yield Path(mount_point)
        finally:
            subprocess.run(["umount", mount_point], check=True)
