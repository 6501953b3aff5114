"""Proposed Parquet layout of the pose labeler's output: one row per image, structured float32 list columns
(compact and columnar; about 1 KB per person instead of ~4 KB of JSON).

    n_humans       int32
    bbox           list<fixed_size_list<float32, 4>>    normalised xyxy per person
    score          list<float32>                        detector score per person
    global_orient  list<fixed_size_list<float32, 9>>    root rotation, row-major
    body_pose      list<fixed_size_list<float32, 207>>  23 joint rotations, row-major
    betas          list<fixed_size_list<float32, 10>>
    camera         list<fixed_size_list<float32, 3>>    weak-perspective (s, tx, ty)

An image without people has n_humans = 0 and empty lists (-> "none" when serialised).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pseudolabel.humans.types import BODY_POSE_DIM, HumanPosesRaw, PersonRaw

VECTORS = {"bbox": 4, "global_orient": 9, "body_pose": BODY_POSE_DIM, "betas": 10, "camera": 3}


def schema() -> pa.Schema:
    fields = [pa.field("n_humans", pa.int32()), pa.field("score", pa.list_(pa.float32()))]
    fields += [pa.field(k, pa.list_(pa.list_(pa.float32(), n))) for k, n in VECTORS.items()]
    return pa.schema(fields)


def to_table(rows: list[HumanPosesRaw]) -> pa.Table:
    """One row per image."""
    data: dict[str, list] = {"n_humans": [len(r.persons) for r in rows],
                             "score": [[p.score if p.score is not None else float("nan") for p in r.persons]
                                       for r in rows]}
    for k in VECTORS:
        data[k] = [[list(getattr(p, k)) for p in r.persons] for r in rows]
    return pa.Table.from_pydict(data, schema=schema())


def from_table(table: pa.Table) -> list[HumanPosesRaw]:
    """Inverse of :func:`to_table` (values as float32 were stored; a NaN score reads back as None)."""
    cols = {k: table.column(k).to_pylist() for k in ("score", *VECTORS)}
    out = []
    for i in range(table.num_rows):
        persons = []
        for j, s in enumerate(cols["score"][i]):
            fields = {k: cols[k][i][j] for k in VECTORS}
            persons.append(PersonRaw(score=None if s is None or np.isnan(s) else s, **fields))
        out.append(HumanPosesRaw(persons=persons))
    return out
