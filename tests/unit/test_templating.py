"""The pages' filters: what a reason shows, escaped, its identifiers kept whole."""

from api.templating import whole_words


def test_a_reason_keeps_its_kernel_releases_on_one_line_and_stays_escaped() -> None:
    shown = whole_words("no kernel sources for 4.18.0-372.26.1.el8_6.x86_64: <script>x-1</script> & more")
    assert '<span class="word">4.18.0-372.26.1.el8_6.x86_64:</span>' in shown
    assert "<script>" not in shown and "&lt;script&gt;" in shown and "&amp; more" in shown
    assert whole_words("plain words only") == "plain words only"
