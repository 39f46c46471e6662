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


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range to serve, or None for the whole file.

    A malformed header or several ranges are ignored (a full 200 is always a valid answer); a
    syntactically valid range that cannot be satisfied raises ``Unsatisfiable``.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:  # suffix range: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, min(end, size - 1))
