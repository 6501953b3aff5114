import pytest
from pydantic import ValidationError

from fourm_core.config import ConfigError, DatasetConfig, load_dataset_config, preset_names


def test_every_preset_validates():
    assert {"cc12m", "coyo700m", "c4", "demo"} <= set(preset_names())
    for name in preset_names():
        cfg = load_dataset_config(name)
        assert cfg.name == name


def test_bad_value_names_file_field_and_value(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsources: [{kind: synthetic}]\ningest: {shard_size: -3}\n")
    with pytest.raises(ConfigError) as err:
        load_dataset_config(path)
    msg = str(err.value)
    assert str(path) in msg and "ingest.shard_size" in msg and "-3" in msg


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: x\nsources: [{kind: synthetic}]\ningest: {shard_sise: 8}\n")
    with pytest.raises(ConfigError, match="shard_sise"):
        load_dataset_config(path)


def test_unknown_source_kind_is_named(tmp_path):
    path = tmp_path / "kind.yaml"
    path.write_text("name: x\nsources: [{kind: ftp_list, path: a}]\n")
    with pytest.raises(ConfigError, match="ftp_list"):
        load_dataset_config(path)


def test_env_expansion_and_missing_variable(tmp_path, monkeypatch):
    path = tmp_path / "env.yaml"
    path.write_text("name: x\nsources: [{kind: url_tsv, path: '${MY_TSV}'}]\n")
    with pytest.raises(ConfigError, match="MY_TSV"):
        load_dataset_config(path)
    monkeypatch.setenv("MY_TSV", "s3://bucket/list.tsv")
    assert load_dataset_config(path).sources[0].path == "s3://bucket/list.tsv"


def test_overrides_are_validated():
    cfg = load_dataset_config("demo", overrides={"ingest.shard_size": 4})
    assert cfg.ingest.shard_size == 4
    with pytest.raises(ConfigError, match="shard_size"):
        load_dataset_config("demo", overrides={"ingest.shard_size": 0})


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="demo"):
        load_dataset_config("imagenet")


def test_dataset_config_is_frozen():
    cfg = DatasetConfig(name="x", sources=[{"kind": "synthetic"}])
    with pytest.raises(ValidationError, match="frozen"):
        cfg.name = "y"


def test_normalise_is_json_dumps_sorted_compact():
    """normalise calls json's C encoder directly (speed); its output must stay exactly json.dumps's, since it is
    part of every cache key."""
    import datetime
    import json
    from pathlib import Path

    from pydantic import BaseModel

    from fourm_core.config import normalise

    class Cfg(BaseModel):
        b: float = 1e-7
        a: list = [1, 2.5, None, True, "é ✓"]

    configs = [{}, {"b": 1, "a": {"z": [1.5, float("inf")], "y": None}}, {"p": Path("/x"), "d": datetime.date(2020, 1, 2)},
               {"q": 'a"b\\c\n', "n": -0.0, "big": 10**30}, Cfg().model_dump(mode="json")]
    for c in configs:
        assert normalise(c) == json.dumps(c, sort_keys=True, separators=(",", ":"), default=str), c
    assert normalise(Cfg()) == json.dumps(Cfg().model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="Circular"):
        normalise(loop)
