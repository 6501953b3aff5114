"""Shared contracts of the 4M pipeline: modality registry, typed configs, artifact store, commit protocol,
cache keys, manifests and lineage. Imports no torch model, no Prefect and no Ray."""

from . import lease
from .config import ConfigError, DatasetConfig, StoreConfig, load_dataset_config
from .manifest import InputRef, Manifest, ModelRef
from .modalities import MODALITIES, Modality, ModalityKind, get_modality
from .store import ArtifactStore, NotCommittedError
from .units import SampleError, Unit, UnitOutput, UnitResult, UnitStatus, run_unit

__all__ = [
    "ArtifactStore", "ConfigError", "DatasetConfig", "InputRef", "MODALITIES", "Manifest", "Modality",
    "ModalityKind", "ModelRef", "NotCommittedError", "SampleError", "StoreConfig", "Unit", "UnitOutput",
    "UnitResult", "UnitStatus", "get_modality", "lease", "load_dataset_config", "run_unit",
]
