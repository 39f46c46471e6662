"""HTTP byte ranges (RFC 9110 §14) for the repo tree: the single-range subset dnf and librepo use."""

from dataclasses import dataclass


class Unsatisfiable(Exception):
    """The range starts beyond the end of the representation: answer 416."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int
    """Inclusive, as in ``Content-Range``."""

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


#: More digits than this name an offset beyond any file (and Python refuses to convert 4,300 or more).
_MAX_DIGITS = 18


def _offset(text: str) -> int | None:
    """An ASCII decimal (``str.isdigit`` also accepts ``²``), capped past any real size; None if malformed."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text) <= _MAX_DIGITS else 10**_MAX_DIGITS


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range to serve, or None for the whole file.

    A malformed header (anything but ASCII digits around one dash) or several ranges are ignored (a full 200
    is always a valid answer); a valid range that cannot be satisfied raises ``Unsatisfiable``.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    start, end = _offset(first), _offset(last)
    if not dash or (start is None and end is None) or (first and start is None) or (last and end is None):
        return None
    if start is None:  # suffix range: the last N bytes
        assert end is not None
        if end == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - end), size - 1)
    if end is not None and end < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, min(end if end is not None else size - 1, size - 1))
