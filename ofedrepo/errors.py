"""The exception tree of ofedrepo.

Every message is written for the person who caused it and is shown as is: by the API as a JSON
``{"detail": ...}`` with the status below, by the CLI as one line and a non-zero exit.

    OfedrepoError                      base class
    ├── InvalidInput                   a value from outside failed validation           422
    │   ├── InvalidKernelRelease       not a kernel release string (``uname -r`` form)
    │   ├── InvalidBundleName          not an MLNX_OFED bundle name
    │   ├── UnsafeArchive              an archive member would escape, is special or too big
    │   ├── NotABundle                 the input lacks what every MLNX_OFED bundle has
    │   ├── TooLarge                   an upload exceeds its configured limit             413
    │   └── UnsupportedMediaType       a request body of a type the endpoint does not take 415
    ├── NotFound                       no such object                                   404
    ├── Conflict                       the request contradicts the current state         409
    ├── ToolFailed                     an external tool (gpg, rpmsign) failed             500
    ├── ApplianceFailed                libguestfs could not start or inspect at all       503
    └── BuildFailed                    a build step failed (kept as the build's error)

A full disk is not ours to raise: ``OSError`` with ``ENOSPC``/``EDQUOT`` reaches the edges as it is, and
each edge (``disk_full``) answers 507 / one CLI line / a failed build saying so, never a traceback.
"""

import errno


class OfedrepoError(Exception):
    """Base of every error ofedrepo raises on purpose."""


class InvalidInput(OfedrepoError):
    """A value that came from outside (a request, a file, a command line) is not acceptable."""


class InvalidKernelRelease(InvalidInput):
    """The string is not a kernel release in ``uname -r`` form."""


class InvalidBundleName(InvalidInput):
    """The name is not ``MLNX_OFED_LINUX-<version>-<distro>-<arch>[-ext]``."""


class UnsafeArchive(InvalidInput):
    """An archive member is absolute, climbs out with ``..``, links outside, is a device or is too big."""


class NotABundle(InvalidInput):
    """The input is not an MLNX_OFED bundle: a marker file or ``RPMS/`` is missing."""


class TooLarge(InvalidInput):
    """An upload is larger than the configured limit; reading stops at the limit."""


class UnsupportedMediaType(InvalidInput):
    """The request body's content type is not one the endpoint accepts."""


class NotFound(OfedrepoError):
    """The requested object does not exist."""


class Unauthorized(OfedrepoError):
    """A call that changes state came without a token while tokens are configured."""


class Forbidden(OfedrepoError):
    """A call that changes state came with a token that is not one of the configured ones."""


class Conflict(OfedrepoError):
    """The request contradicts the current state of the object."""


class ToolFailed(OfedrepoError):
    """An external program exited with an error; the message carries the tail of its output."""

    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-15:])
        super().__init__(f"{argv[0]} exited with status {returncode}: {tail}")


class ApplianceFailed(OfedrepoError):
    """The libguestfs appliance could not start (with KVM nor TCG) or its inspection broke down."""


class BuildFailed(OfedrepoError):
    """A build cannot produce a version: no kernel sources, the vendor script failed, verification failed."""


#: How SQLite says its disk is full (SQLITE_FULL), through sqlite3 and SQLAlchemy's ``OperationalError``.
_SQLITE_FULL = "database or disk is full"


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` is the disk (or a quota) running out of space: an ``OSError``'s ENOSPC or EDQUOT, or
    SQLite failing a write for it."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return _SQLITE_FULL in str(error)


def disk_full_message(error: BaseException) -> str:
    where = f" writing {error.filename}" if isinstance(error, OSError) and error.filename else ""
    return f"no space left on the disk{where}; free some (ofedrepo gc) and try again"
