"""Chunks travel between the Ray pass's steps as Arrow IPC bytes: the round trip changes nothing the stage commits."""

from __future__ import annotations

import io
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pseudolabel.registry import LABELERS, labeler_class
from pseudolabel.runner import ERR, from_wire, to_wire


def _value(t: pa.DataType, rnd: random.Random):
    """A deterministic, non-trivial value of type ``t`` (every type a labeler's output schema uses)."""
    if pa.types.is_fixed_size_binary(t):
        return rnd.randbytes(t.byte_width)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return rnd.randbytes(rnd.randint(0, 40))
    if pa.types.is_string(t):
        return "".join(rnd.choice("abcé漢 \t") for _ in range(rnd.randint(0, 12)))
    if pa.types.is_boolean(t):
        return rnd.random() < 0.5
    if pa.types.is_integer(t):
        return rnd.randint(0, 100) * (1 if pa.types.is_unsigned_integer(t) else rnd.choice((-1, 1)))
    if pa.types.is_floating(t):
        return rnd.choice([rnd.uniform(-1e3, 1e3), 0.0, -0.0, float("inf")])
    if pa.types.is_fixed_size_list(t):
        return [_value(t.value_type, rnd) for _ in range(t.list_size)]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [_value(t.value_type, rnd) for _ in range(rnd.randint(0, 3))]
    if pa.types.is_struct(t):
        return {f.name: _value(f.type, rnd) for f in t}
    raise AssertionError(f"no test value for {t}")


def _step_output(name: str, rows: int = 7) -> pa.Table:
    """A chunk as a labeler's step returns it (label_step's columns), one row failed, built in two chunks."""
    cls = labeler_class(name)
    lab = cls(cls.Settings(**({"model": "tiny"} if cls.uses_model else {})),
              available=frozenset(LABELERS) | {"rgb", "caption", "ground_truth"})
    rnd = random.Random(name)
    cols: dict[str, pa.Array] = {"sample_key": pa.array([f"k{i}" for i in range(rows)]),
                                 "_idx": pa.array(range(rows), pa.int64())}
    ok = [i != 2 for i in range(rows)]
    for label, schema in lab.schema().items():
        for f in schema:
            cols[f"{label}.{f.name}"] = pa.array([_value(f.type, rnd) if ok[i] else None for i in range(rows)], f.type)
        cols[f"{label}.__ok"] = pa.array(ok)
    cols[ERR + name] = pa.array([None if o else "labeler_error\tboom" for o in ok], pa.string())
    table = pa.table(cols).replace_schema_metadata({b"origin": name.encode()})
    return pa.concat_tables([table.slice(0, 3), table.slice(3)])


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(LABELERS))
def test_every_labelers_output_survives_the_wire_unchanged(name):
    table = _step_output(name)
    back = from_wire(to_wire(table))
    assert back.schema.equals(table.schema, check_metadata=True)
    assert back.equals(table)
    assert [c.num_chunks for c in back.columns] == [c.num_chunks for c in table.columns]
    assert _parquet(back) == _parquet(table)
    for off, n in ((1, 4), (5, 2)):  # a slice ships its rows only, and comes back as those rows
        part = table.slice(off, n)
        assert from_wire(to_wire(part)).equals(part)
        assert _parquet(from_wire(to_wire(part))) == _parquet(part)


def test_the_wire_reads_plain_bytes():
    table = _step_output("t5")
    assert from_wire(to_wire(table).to_pybytes()).equals(table)
    assert to_wire(table).size < table.nbytes + 4096  # no pickle framing per column and chunk
