"""The fast S3 listing of the cached check's size comparison (fourm_core.s3list) gives exactly what fsspec's
listing gives: every object directly under the folder with its size, over several pages, nothing from
sub-folders; a missing folder is empty; a truncated data file shows its new size in ``data_sizes``, and the
orchestrator's cached check (listings in the background while units are built) sends its shard to run."""

from __future__ import annotations

import posixpath

import pyarrow as pa
import pytest

from fourm_core.config import DatasetConfig

from fourm_core.s3list import parse_data_sizes, parse_listing, s3_data_sizes, s3_sizes
from fourm_core.stage import StageSpec
from fourm_core.store import ArtifactStore
from fourm_core.units import Unit, UnitOutput, run_unit


@pytest.fixture
def s3_store(s3_root):
    root, options = s3_root
    return ArtifactStore(root, options)


def test_matches_fsspec_listing_over_pages(s3_store):
    folder = s3_store.artifact_dir("ds", "sizes")
    files = {f"shard-{i:05d}.parquet": b"x" * (i % 17 + 1) for i in range(30)}
    files["shard-00003.manifest.json"] = b"{}"
    files["a&b 'c\".json"] = b"escaped in the listing's XML"
    s3_store.fs.pipe({posixpath.join(folder, n): d for n, d in files.items()})
    s3_store.write_bytes(posixpath.join(folder, "sub", "shard-00001.parquet"), b"deeper")  # not listed
    fast = s3_sizes(s3_store.fs, folder, page_keys=7)  # 5 pages
    slow = {posixpath.basename(i["name"]): int(i["size"]) for i in s3_store.fs.ls(folder, detail=True, refresh=True)
            if i["type"] == "file"}
    assert fast == slow == {n: len(d) for n, d in files.items()}
    assert s3_sizes(s3_store.fs, s3_store.artifact_dir("ds", "nothing-here")) == {}
    # the data files alone (what the cached check compares): no manifest, errors file or sub-folder
    s3_store.fs.pipe({posixpath.join(folder, "shard-00004.errors.parquet"): b"e",
                      posixpath.join(folder, "shard-00004.manifest.json"): b"{}"})
    data = {int(n[6:11]): len(d) for n, d in files.items() if n.startswith("shard-") and n.endswith(".parquet")}
    assert len(data) == 30 and s3_data_sizes(s3_store.fs, folder, page_keys=7) == data
    assert s3_data_sizes(s3_store.fs, s3_store.artifact_dir("ds", "nothing-here")) == {}


def test_data_sizes_see_a_truncated_file(s3_store):
    folder = s3_store.artifact_dir("ds", "trunc")
    s3_store.write_bytes(posixpath.join(folder, "shard-00000.parquet"), b"y" * 900)
    s3_store.write_bytes(posixpath.join(folder, "shard-00000.errors.parquet"), b"e")
    assert s3_store.data_sizes("ds", "trunc") == {0: 900}
    s3_store.write_bytes(posixpath.join(folder, "shard-00000.parquet"), b"y" * 500)
    s3_store.invalidate()
    assert s3_store.data_sizes("ds", "trunc") == {0: 500}


def _units(store: ArtifactStore, config, shard: int) -> list[Unit]:
    return [Unit(stage="sz", dataset="ds", artifacts=[a], shard=shard, code_version="sz/1", config={"a": a})
            for a in ("one", "two")]


def _commit(store: ArtifactStore, unit: Unit) -> None:
    table = pa.table({"sample_key": [f"k{unit.shard}-{i}" for i in range(50)], "v": list(range(50))})
    run_unit(store, unit, lambda: UnitOutput({unit.artifacts[0]: table}))


def test_cached_check_sends_a_truncated_shard_to_run_on_s3(s3_store):
    """split_cached lists the sizes in the background while it builds the units (preload_sizes(wait=False)),
    compares them afterwards: only the shard whose data file was cut short is dispatched."""
    from pipelines.planning import split_cached

    config = DatasetConfig.model_validate({"name": "ds", "sources": [{"kind": "synthetic", "n_samples": 3}]})
    spec = StageSpec(name="sz", plan_shards=lambda store, cfg: [0, 1, 2], run_shard=lambda *a, **k: [],
                     artifacts=("one", "two"), shard_units=_units)
    for shard in (0, 1, 2):
        for unit in _units(s3_store, config, shard):
            _commit(s3_store, unit)
    view = ArtifactStore(s3_store.root_uri, s3_store.storage_options, use_index=True)
    cached, to_run = split_cached(view, spec, config, [0, 1, 2], force=False)
    assert to_run == [] and len(cached) == 6
    path = s3_store.data_path("ds", "two", 1)
    s3_store.write_bytes(path, s3_store.read_bytes(path)[:100])  # truncated after its commit
    view = ArtifactStore(s3_store.root_uri, s3_store.storage_options, use_index=True)
    cached, to_run = split_cached(view, spec, config, [0, 1, 2], force=False)
    assert to_run == [1] and sorted((s["shard"], s["artifacts"][0]) for s in cached) == [
        (0, "one"), (0, "two"), (2, "one"), (2, "two")]


def test_a_commit_drops_a_listing_still_in_the_background(s3_store):
    """A size listing started before a commit may predate the new data file: the commit drops it, and the next
    data_sizes lists again (also after invalidate)."""
    unit = _units(s3_store, None, 0)[0]
    s3_store.preload_sizes("ds", ["one", "two"], wait=False)
    _commit(s3_store, unit)
    size = len(s3_store.read_bytes(s3_store.data_path("ds", "one", 0)))
    assert s3_store.data_sizes("ds", "one") == {0: size} and s3_store.data_sizes("ds", "two") == {}
    s3_store.preload_sizes("ds", ["one"], wait=False)  # already listed: nothing to do
    assert s3_store.data_sizes("ds", "one") == {0: size}
    s3_store.invalidate()
    s3_store.preload_sizes("ds", ["one", "two"], wait=False)
    assert s3_store.data_sizes("ds", "one") == {0: size} and s3_store.data_sizes("ds", "two") == {}


def test_not_s3_is_left_to_fsspec(tmp_path):
    assert s3_sizes(ArtifactStore(str(tmp_path)).fs, str(tmp_path)) is None


def test_parse_listing_matches_xml_etree():
    """The regular-expression parser gives what an XML parser gives: escaped keys and token, Key and Size in
    either order, CommonPrefixes ignored; a response that is not a listing is refused (None)."""
    import xml.etree.ElementTree as ET

    ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
    page = (b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            b"<Name>b</Name><Prefix>p/</Prefix><KeyCount>3</KeyCount><MaxKeys>3</MaxKeys><Delimiter>/</Delimiter>"
            b"<Contents><Key>p/shard-00000.parquet</Key><ETag>&#34;e&#34;</ETag><Size>802</Size></Contents>"
            b"<Contents><LastModified>2026-12-02T10:28:20Z</LastModified><Size>7</Size>"
            b"<Key>p/a&amp;b &#39;c&quot;&lt;d&gt;.json</Key><StorageClass>STANDARD</StorageClass></Contents>"
            b"<Contents><Key>p/\xc3\xa9t\xc3\xa9.parquet</Key><Size>0</Size><Owner><ID>x</ID></Owner></Contents>"
            b"<CommonPrefixes><Prefix>p/sub/</Prefix></CommonPrefixes>"
            b"<IsTruncated>true</IsTruncated><NextContinuationToken>t&amp;k=</NextContinuationToken></ListBucketResult>")
    root = ET.fromstring(page)
    expected = {c.findtext(ns + "Key"): int(c.findtext(ns + "Size")) for c in root.iter(ns + "Contents")}
    assert parse_listing(page) == (expected, True, root.findtext(ns + "NextContinuationToken"))
    assert expected["p/a&b 'c\"<d>.json"] == 7 and "p/\u00e9t\u00e9.parquet" in expected
    last = page.replace(b"<IsTruncated>true", b"<IsTruncated>false").replace(
        b"<NextContinuationToken>t&amp;k=</NextContinuationToken>", b"")
    assert parse_listing(last) == (expected, False, None)
    encoded = page.replace(b"<Delimiter>/</Delimiter>", b"<Delimiter>/</Delimiter><EncodingType>url</EncodingType>"
                           ).replace(b"p/shard-00000.parquet", b"p/shard-00000+%26.parquet")
    assert parse_listing(encoded)[0]["p/shard-00000 &.parquet"] == 802  # EncodingType=url: keys URL-decoded
    assert parse_listing(b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>") is None
    assert parse_listing(page.replace(b"<Size>7</Size>", b"")) is None  # an element it cannot read: refuse
    # the data files' parser: the one data key with its own size, not the next element's; refuses what it
    # cannot pair (Size before Key, a Size missing) and what is not a listing
    assert parse_data_sizes(page) == {0: 802}
    swapped = page.replace(b"<Key>p/shard-00000.parquet</Key><ETag>&#34;e&#34;</ETag><Size>802</Size>",
                           b"<Size>802</Size><ETag>&#34;e&#34;</ETag><Key>p/shard-00000.parquet</Key>")
    assert parse_data_sizes(swapped) is None
    assert parse_data_sizes(page.replace(b"<Size>802</Size>", b"")) is None
    assert parse_data_sizes(b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>") is None
