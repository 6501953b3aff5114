"""A stage's source changed but its CODE_VERSION did not: fail, and say what to decide (tests/code_versions.py)."""

from __future__ import annotations

import json

from tests import code_versions


def test_code_versions_match_the_committed_table():
    table = json.loads(code_versions.TABLE.read_text())
    now = code_versions.current()
    problems = []
    for name, cur in now.items():
        old = table.get(name)
        if old is None:
            problems.append(f"{name}: not in the table")
        elif cur["source_digest"] != old["source_digest"] and cur["code_version"] == old["code_version"]:
            problems.append(f"{name}: its source changed but its code version {cur['code_version']!r} did not")
        elif cur != old:
            problems.append(f"{name}: the table records {old}, the code is {cur}")
    problems += [f"{name}: in the table but not in tests/code_versions.py" for name in set(table) - set(now)]
    assert not problems, (
        "\n".join(problems) + "\n\nIf the change alters what the unit outputs for the same inputs and config, bump its "
        "code version (committed units are then recomputed); if not, keep the version. Either way record the "
        "decision: PYTHONPATH=. python -m tests.code_versions --update")


def test_digest_ignores_docs_and_comments_but_not_code(tmp_path, monkeypatch):
    monkeypatch.setattr(code_versions, "REPO", tmp_path)
    src = tmp_path / "m.py"
    src.write_text('"""Doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 1\n')
    base = code_versions.source_digest(["m.py"])
    src.write_text('"""Other doc."""\n# a comment\n\ndef f(x):\n    return x + 1  # same code\n')
    assert code_versions.source_digest(["m.py"]) == base
    src.write_text('def f(x):\n    return x + 2\n')
    assert code_versions.source_digest(["m.py"]) != base
