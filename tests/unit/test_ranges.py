import pytest

from api.ranges import ByteRange, Unsatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", ByteRange(0, 9)),
        ("bytes=10-", ByteRange(10, 99)),
        ("bytes=-10", ByteRange(90, 99)),
        ("bytes=-1000", ByteRange(0, 99)),
        ("bytes=50-1000", ByteRange(50, 99)),
        ("bytes=0-9,20-29", None),  # several ranges: a full answer is always allowed
        ("items=0-9", None),
        ("bytes=9-0", None),
        ("bytes=a-b", None),
        ("bytes=-", None),
        ("bytes=0-\u00b2", None),  # str.isdigit() says yes to a superscript two; int() does not
        ("bytes=\u0661-5", None),  # an Arabic-Indic digit
        ("bytes=0-" + "9" * 5000, ByteRange(0, 99)),  # past any size: to the end
        ("bytes=-" + "9" * 5000, ByteRange(0, 99)),
    ],
)
def test_parse(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=200-300", "bytes=-0", "bytes=" + "9" * 5000 + "-"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, 100)


def test_content_range() -> None:
    assert ByteRange(0, 9).content_range(100) == "bytes 0-9/100"
    assert ByteRange(0, 9).length == 10
