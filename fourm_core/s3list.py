"""Object sizes of one S3 "folder" from ListObjectsV2, parsed with the C XML parser.

Why: the orchestrator's cached check lists every artifact folder for its data sizes (two to three keys per
committed unit: data, manifest, errors), i.e. ~600 000 keys at 10 000 shards x 30 artifacts. s3fs parses each
listing through botocore's pure-Python response parser: 93 us of CPU per key measured on the shared 2-core box
(bench/bench_control_plane.py; about a minute at that size). Fetching the same listing through a presigned
URL (signed by the store's own botocore client, so the same credentials, endpoint and region) and parsing it
with ``xml.etree`` cost 13 us per key; at 10 000 shards that was still ~15 s of the re-run's CPU on S3. The
page is now cut at ``<Contents>`` and each element's ``Key`` and ``Size`` found with two regular expressions
(3-4x less CPU than ``xml.etree``; keys are XML-escaped, so no key contains markup), with identical results
(tests/store_s3/test_s3_list.py compares them with ``xml.etree`` and with fsspec's listing).

The cached check needs only the main data files' sizes: :func:`s3_data_sizes` finds them with one regular
expression over each page (``.../shard-NNNNN.parquet</Key>`` ... ``<Size>``, inside one ``<Contents>``), in C,
without a Python step per listed key (errors and digest files, and in an old-layout folder the manifests, are
skipped); a page where that count disagrees with the data keys it holds (another element order) is refused like
any other. The folder listed is ``<artifact>/data/`` (``ArtifactStore._list_sizes``), which holds only the
parts' files, so the server walks a third to a half of the keys the artifact folder holds; the artifact folder
itself is listed only while old-layout parts (data files beside their manifests) remain.

Anything unusual (another filesystem, an HTTP or TLS setting urllib does not share with botocore, a
response that is not a listing) returns None, and the caller lists through fsspec as before.
"""

from __future__ import annotations

import html
import re
import urllib.parse
import urllib.request
from typing import Any, Callable

_TIMEOUT_S = 120
_KEY = re.compile(rb"<Key>([^<]*)</Key>")
_SIZE = re.compile(rb"<Size>(\d+)</Size>")
_TRUNCATED = re.compile(rb"<IsTruncated>([a-z]+)</IsTruncated>")
_TOKEN = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")


def _text(raw: bytes) -> str:
    text = raw.decode("utf-8")
    return html.unescape(text) if "&" in text else text  # XML escapes (&amp; &#34; ...) in keys and tokens


def parse_listing(page: bytes) -> tuple[dict[str, int], bool, str | None] | None:
    """({key: size}, truncated?, next continuation token) of one ListObjectsV2 response; None when it is not a
    listing this parser understands (the caller then lists another way)."""
    head, *contents = page.split(b"<Contents>")
    if b"<ListBucketResult" not in head:
        return None
    # botocore asks for EncodingType=url (also in a presigned URL) and decodes the keys it gets back; so do we
    decode = urllib.parse.unquote_plus if b"<EncodingType>url</EncodingType>" in page else None
    out: dict[str, int] = {}
    for element in contents:  # Key and Size in either order; the last one also holds the elements after it
        key, size = _KEY.search(element), _SIZE.search(element)
        if key is None or size is None:
            return None
        name = _text(key.group(1))
        out[decode(name) if decode else name] = int(size.group(1))
    return (out, *_next_token(page))


def _next_token(page: bytes) -> tuple[bool, str | None]:
    truncated = _TRUNCATED.search(page)
    token = _TOKEN.search(page)
    return truncated is not None and truncated.group(1) == b"true", _text(token.group(1)) if token else None


_DATA = re.compile(rb"/shard-(\d{5})\.parquet</Key>[^<]*(?:<(?!Size>|/Contents>)[^<]*)*<Size>(\d+)</Size>")
_DATA_KEY = re.compile(rb"shard-\d{5}\.parquet</Key>")


def parse_data_sizes(page: bytes) -> dict[int, int] | None:
    """{shard: bytes} of the ``shard-NNNNN.parquet`` files (not ``.errors.parquet``, not manifests) of one
    ListObjectsV2 page (listed with ``Delimiter=/``, so every key is directly under the prefix); None when it
    is not a listing, or when the data keys and the (key, size) pairs found disagree (e.g. ``Size`` before
    ``Key``): the caller then parses the page in full."""
    if b"<ListBucketResult" not in page:
        return None
    pairs = _DATA.findall(page)
    if len(pairs) != len(_DATA_KEY.findall(page)):
        return None
    return {int(shard): int(size) for shard, size in pairs}


def _listing(fs: Any, path: str, page_keys: int | None,
             parse: Callable[[bytes, str], dict | None]) -> dict | None:
    """``parse(page, prefix)`` of every ListObjectsV2 page of the objects directly under ``path``, merged; None
    when a page is refused or anything goes wrong (the caller lists another way)."""
    try:
        import s3fs
        from fsspec.asyn import sync
    except ImportError:
        return None
    if not isinstance(fs, s3fs.S3FileSystem):
        return None
    try:
        bucket, key, _ = fs.split_path(path)
        prefix = key.rstrip("/") + "/"
        client = sync(fs.loop, fs.set_session)
        out: dict = {}
        token = None
        while True:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
            if page_keys:
                params["MaxKeys"] = page_keys
            if token:
                params["ContinuationToken"] = token
            url = sync(fs.loop, client.generate_presigned_url, "list_objects_v2", Params=params, ExpiresIn=600)
            with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:  # noqa: S310 - the store's own endpoint
                page = resp.read()
            parsed = parse(page, prefix)
            if parsed is None:
                return None
            out.update(parsed)
            truncated, token = _next_token(page)
            if not truncated:
                return out
            if not token:
                return None
    except Exception:  # noqa: BLE001 - any problem: the ordinary (slower) listing answers instead
        return None


def _names(page: bytes, prefix: str) -> dict[str, int] | None:
    parsed = parse_listing(page)
    if parsed is None:
        return None
    return {key[len(prefix):]: size for key, size in parsed[0].items()
            if key.startswith(prefix) and len(key) > len(prefix) and "/" not in key[len(prefix):]}


def s3_sizes(fs: Any, path: str, page_keys: int | None = None) -> dict[str, int] | None:
    """{name: bytes} of the objects directly under ``path`` (no sub-folders) on an s3fs filesystem, None when
    this fast path does not apply (the caller then uses ``fs.ls``). A missing folder gives {}. ``page_keys``:
    keys per page (the server's default, 1 000, when None)."""
    return _listing(fs, path, page_keys, _names)


def s3_data_sizes(fs: Any, path: str, page_keys: int | None = None) -> dict[int, int] | None:
    """{shard: bytes} of the main data files ``shard-NNNNN.parquet`` directly under ``path`` (what the cached
    check compares), None when this fast path does not apply (the caller then uses :func:`s3_sizes`)."""
    return _listing(fs, path, page_keys, lambda page, prefix: parse_data_sizes(page))
