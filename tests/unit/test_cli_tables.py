"""Tables on standard output (``cli.common.print_table``): whole identifiers, no trailing blanks."""

import pytest
from rich import box
from rich.table import Table

from cli.common import print_table


def test_rows_end_where_their_text_ends_and_long_values_stay_whole(capsys: pytest.CaptureFixture[str]) -> None:
    table = Table(box=box.SIMPLE, show_header=False)
    table.add_column("field")
    table.add_column("value", no_wrap=True)
    table.add_row("os", "rocky 8.6 (x86_64)")
    table.add_row("sha256", "0" * 64 + "-" + "4.18.0-372.26.1.el8_6.x86_64" * 3)
    print_table(table)
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line == line.rstrip() for line in lines)
    assert any("4.18.0-372.26.1.el8_6.x86_64" * 3 in line for line in lines)  # never folded at 80 columns
    assert any(line.strip().startswith("os") and line.endswith("rocky 8.6 (x86_64)") for line in lines)
