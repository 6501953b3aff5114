"""Registry of stage name -> StageSpec.

Stages are plain libraries (see ``fourm_core.stage``); this module only knows where each one keeps its
``StageSpec`` and imports it lazily, so ``python -m pipelines status`` works without importing torch
models, and a stage that is not installed yet fails with a clear message only when it is asked for.

To wire in a new stage: add ``"<name>": "<package>.<module>:<ATTRIBUTE>"`` to ``STAGE_MODULES``. The
stage's name must match its ``StageSpec.name`` and the names used in dataset configs' ``stages`` lists.
"""

from __future__ import annotations

import importlib
import os

from fourm_core.stage import StageSpec

# name -> "module:attribute". Order is the pipeline order (used when listing).
STAGE_MODULES: dict[str, str] = {
    "ingest": "ingest_stage.stage:STAGE",
    "dedup": "ingest_stage.dedup:STAGE",  # cross-shard / cross-dataset duplicates (after ingest; drops nothing)
    # Hooks for the later stages; they register the same way once their packages expose a StageSpec.
    "pseudolabel": "pseudolabel.stage:STAGE",
    "train-tokenizers": "tokenize_stage.training_stage:STAGE",
    "import-tokenizers": "tokenize_stage.official:STAGE",  # released tokenizers instead of training
    "tokenize": "tokenize_stage.stage:STAGE",
}

# Extra registrations "name=module:attr,name2=module:attr" (tests and out-of-tree stages). Read at lookup
# time so a Prefect worker or Ray worker picks it up from its environment.
EXTRA_ENV = "FOURM_EXTRA_STAGES"


class StageNotAvailable(LookupError):
    """A stage name is unknown, or its package cannot be imported."""


def registry() -> dict[str, str]:
    """Every known stage name -> "module:attribute", including those added through FOURM_EXTRA_STAGES."""
    reg = dict(STAGE_MODULES)
    for item in filter(None, (s.strip() for s in os.environ.get(EXTRA_ENV, "").split(","))):
        name, _, target = item.partition("=")
        if not target or ":" not in target:
            raise StageNotAvailable(f"{EXTRA_ENV} entry {item!r} must look like name=package.module:ATTRIBUTE")
        reg[name.strip()] = target.strip()
    return reg


def get_stage(name: str) -> StageSpec:
    """The StageSpec registered as ``name``; imports its package on first use."""
    reg = registry()
    if name not in reg:
        raise StageNotAvailable(f"unknown stage {name!r}; known stages: {', '.join(reg)}")
    module_name, _, attr = reg[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        # Only "the stage module itself is missing" is reported as not available; a missing dependency
        # inside an existing stage module is a real bug and keeps its own traceback.
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise StageNotAvailable(f"stage {name!r} is not available: module {module_name!r} not found "
                                    f"(is its package installed / has it landed?)") from err
        raise
    spec = getattr(module, attr, None)
    if not isinstance(spec, StageSpec):
        raise StageNotAvailable(f"stage {name!r}: {module_name}.{attr} is not a fourm_core.stage.StageSpec")
    if spec.name != name:
        raise StageNotAvailable(f"stage registered as {name!r} calls itself {spec.name!r}")
    return spec


def get_stages(names: list[str]) -> list[StageSpec]:
    """Resolve every name before any work starts, so a typo fails the run up front."""
    return [get_stage(n) for n in names]
