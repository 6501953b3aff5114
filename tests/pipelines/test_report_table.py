"""The fixed-width tables of `status` and friends (format_table is timed at 300 000 rows by
bench/bench_control_plane.py; its output must not change with its speed)."""

from fourm_core.lineage import StatusRow
from pipelines.report import format_table, status_table


def test_format_table_pads_columns_and_strips_line_ends():
    text = format_table(["a", "bb", "c"], [[1, None, "x{0}"], ["long", 2, ""]])
    assert text.split("\n") == ["a     bb  c", "----  --  ----", "1         x{0}", "long  2"]
    assert format_table(["a", "b"], []) == "a  b\n-  -"


def test_status_table_rows():
    rows = [StatusRow("ingest", "images", 3, "cached", 10, 1, seconds=1.234),
            StatusRow("tokenize", "tokens/x", None, "failed", detail="boom " * 30)]
    lines = status_table(rows).split("\n")
    assert lines[0].split() == ["stage", "artifact", "shard", "state", "rows", "errors", "seconds", "detail"]
    assert lines[2].split() == ["ingest", "images", "00003", "cached", "10", "1", "1.23"]
    assert lines[3].split()[:5] == ["tokenize", "tokens/x", "-", "failed", "0"] and lines[3].endswith("...")
