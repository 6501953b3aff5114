"""The committed table of (versioned unit, CODE_VERSION, source digest): a code change that forgets to bump
a code version is noticed (tests/core/test_code_versions.py), so changing behaviour means deciding about the
cache.

Each entry names where its version lives and the source files whose behaviour it vouches for. The digest is
of the files' syntax trees without docstrings (comments, formatting and docs do not count), so only code
changes trip it. After deciding (bump the version if the output changes for the same inputs and config, or
not), record the new state:

    PYTHONPATH=. python -m tests.code_versions --update
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLE = Path(__file__).with_name("code_versions.json")

# The decode every stage reads images through: a change to it is a change to each of them.
IMAGE_DECODE = "fourm_core/image_decode.py"

# name -> (version location "path.py:NAME" / "path.py:Class.attr" or a list of them, source globs)
ENTRIES: dict[str, tuple[str | list[str], list[str]]] = {
    "ingest": ("ingest_stage/stage.py:CODE_VERSION",
               ["ingest_stage/[!_]*.py", "ingest_stage/sources/*.py", "ingest_stage/synthetic/*.py",
                "!ingest_stage/dedup.py"]),
    "ingest.dedup": ("ingest_stage/dedup.py:CODE_VERSION", ["ingest_stage/dedup.py"]),
    "tokenize.pretokenize": ("tokenize_stage/stage.py:CODE_VERSION",
                             ["tokenize_stage/stage.py", "tokenize_stage/committed.py", "tokenize_stage/normalize.py",
                              "tokenize_stage/labels.py", "tokenize_stage/models/**/*.py"]),
    "tokenize.crops": ("tokenize_stage/stage.py:CROPS_CODE_VERSION", ["tokenize_stage/crops.py"]),
    "tokenize.caption": ("tokenize_stage/captions.py:CODE_VERSION",
                         ["tokenize_stage/captions.py", "tokenize_stage/text/*.py"]),
    "tokenize.sequences": ("tokenize_stage/sequences.py:CODE_VERSION",
                           ["tokenize_stage/sequences.py", "tokenize_stage/seq_geometry.py",
                            "tokenize_stage/text/serialise/*.py", "fourm_core/structured.py"]),
    "tokenize.fused": ("tokenize_stage/fused.py:CODE_VERSION", ["tokenize_stage/fused.py", IMAGE_DECODE]),
    "tokenize.train": ("tokenize_stage/train_tokenizer.py:CODE_VERSION", ["tokenize_stage/train_tokenizer.py"]),
    "train": ("train_stage/trainer.py:CODE_VERSION",
              ["train_stage/[!_]*.py", "train_stage/model/**/*.py", IMAGE_DECODE]),
    "evaluate": ("eval_stage/evaluation.py:CODE_VERSION", ["eval_stage/[!_]*.py", "eval_stage/generate/**/*.py",
                                                        "eval_stage/metrics/**/*.py", "!eval_stage/chain.py",
                                                        IMAGE_DECODE]),
    "evaluate.chain": ("eval_stage/chain.py:CODE_VERSION", ["eval_stage/chain.py", "eval_stage/sequences.py",
                                                            "eval_stage/generate/**/*.py"]),
}
# plus, from _labeler_entries(): one entry per labeler class (its own module) and the shared pseudolabel code,
# whose version is every labeler's version together (a shared change is a change to every labeler)


def _labeler_entries() -> dict[str, tuple[str | list[str], list[str]]]:
    """One entry per labeler class that sets ``code_version`` in its module, found in the source (importing
    the labelers would import torch and the model libraries)."""
    out: dict[str, tuple[str | list[str], list[str]]] = {}
    locations, helpers = [], []
    for file in sorted((REPO / "pseudolabel" / "labelers").glob("[!_]*.py")):
        path = str(file.relative_to(REPO))
        versioned = [node for node in ast.parse(file.read_text()).body
                     if isinstance(node, ast.ClassDef) and _class_attr(node, "code_version") is not None]
        for node in versioned:
            loc = f"{path}:{node.name}.code_version"
            out[f"pseudolabel.{file.stem}.{node.name}"] = (loc, [path])
            locations.append(loc)
        if not versioned:
            helpers.append(path)  # shared by several labelers
    out["pseudolabel.shared"] = (locations, ["pseudolabel/[!_]*.py", *helpers, "pseudolabel/detection/*.py",
                                             "pseudolabel/sam/*.py", "pseudolabel/humans/*.py", IMAGE_DECODE])
    return out


def _class_attr(cls: ast.ClassDef, name: str) -> str | None:
    for node in cls.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign)
                                                                       and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == name and isinstance(node.value, ast.Constant):
            return str(node.value.value)
    return None


def entries() -> dict[str, tuple[str | list[str], list[str]]]:
    return {**ENTRIES, **_labeler_entries()}


def _version(location: str | list[str]) -> str:
    """The version string at ``path.py:NAME`` or ``path.py:Class.attr``, read from the source."""
    if isinstance(location, list):
        return ",".join(_version(x) for x in location)
    path, _, attr = location.partition(":")
    tree = ast.parse((REPO / path).read_text())
    if "." in attr:
        cls_name, attr_name = attr.split(".", 1)
        cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
        value = _class_attr(cls, attr_name)
    else:
        value = next((str(n.value.value) for n in tree.body if isinstance(n, ast.Assign) and len(n.targets) == 1
                      and isinstance(n.targets[0], ast.Name) and n.targets[0].id == attr
                      and isinstance(n.value, ast.Constant)), None)
    if value is None:
        raise LookupError(f"no string constant {attr} in {path}")
    return value


def _files(globs: list[str]) -> list[Path]:
    """Files matching the globs, minus those of ``!glob`` entries and ``__main__.py`` (CLIs)."""
    drop = {p for g in globs if g.startswith("!") for p in REPO.glob(g[1:])}
    found = sorted({p for g in globs if not g.startswith("!") for p in REPO.glob(g)
                    if p.is_file() and p.name != "__main__.py"} - drop)
    if not found:
        raise FileNotFoundError(f"no source files match {globs}")
    return found


def source_digest(globs: list[str]) -> str:
    """sha256 over the files' syntax trees without docstrings (comments and formatting do not count)."""
    h = hashlib.sha256()
    for path in _files(globs):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return h.hexdigest()[:16]


def current() -> dict[str, dict[str, str]]:
    return {name: {"code_version": _version(loc), "source_digest": source_digest(globs)}
            for name, (loc, globs) in sorted(entries().items())}


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python -m tests.code_versions --update")
    TABLE.write_text(json.dumps(current(), indent=2) + "\n")
    print(f"wrote {TABLE}")
