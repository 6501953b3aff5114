"""What flows through ingestion: sample references, payloads, and per-sample failures with stable reason codes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Stable reason codes for the errors table. Downstream tooling (status tables, dashboards) keys off these
# strings, so they are part of the data contract: add new ones, never rename.
REASONS: dict[str, str] = {
    "bad_scheme": "the URL is not http/https (file://, ftp://, data: ...) and is refused",
    "bad_url": "the URL cannot be parsed or has no host",
    "http_4xx": "placeholder; the actual code is http_<status>, e.g. http_404, http_403, http_429",
    "http_5xx": "the server kept answering 5xx after every retry",
    "timeout": "no complete answer within download.timeout_s",
    "connection_error": "connection refused/reset or protocol error after every retry",
    "too_large": "the body is larger than download.max_bytes (refused or stopped while streaming)",
    "empty_body": "the server answered 200 with zero bytes, or a local file is empty",
    "redirect_loop": "a redirect pointed back at a URL already visited",
    "too_many_redirects": "more than download.max_redirects redirects",
    "not_image": "the bytes are not in any image format (e.g. HTML served as image/jpeg)",
    "decode_error": "an image format was recognised but the data is corrupt or truncated",
    "bomb": "more pixels than ingest.max_pixels (decompression-bomb guard)",
    "missing_file": "a local file named by the source does not exist or cannot be read",
    "duplicate_url": "the same URL appeared earlier in the dataset; only the first is kept",
    "duplicate_content": "decoded pixels identical to an earlier sample of the shard",
    "duplicate_key": "a sample key appeared earlier in the shard",
    "empty_text": "a text-only sample has no text",
}


class SampleFailure(Exception):
    """A per-sample failure: recorded in the errors table, never fatal for the shard."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SampleRef:
    """A sample as a source lists it, before anything is fetched or decoded.

    ``key`` is the stable ``sample_key`` (URL hash for URL lists, ``<source>-<id>`` otherwise);
    ``locator`` tells the source where the payload lives (file path, tar member, line, scene index).
    """

    key: str
    source: str
    caption: str | None = None
    url: str | None = None
    locator: Any = None
    meta: dict[str, Any] | None = None  # the source's own columns kept per sample (COYO id and scores)


@dataclass
class SceneSample:
    """A synthetic scene to render: the renderer draws it at any resolution, exactly."""

    scene: Any
    size: int


@dataclass
class ImageRow:
    """One committed row of the ``images`` artifact (and, for scenes, its ``ground_truth`` row)."""

    sample_key: str
    image: bytes
    width: int
    height: int
    orig_width: int
    orig_height: int
    caption: str | None
    source: str
    url: str | None
    digest: str
    meta: str | None  # JSON object of the source's kept columns (COYO id and scores), or None
    phash: int
    cropped: bool = False  # bounded to ingest.filters.max_aspect_ratio by a centre crop (counted in the stats)
    ground_truth: dict[str, Any] | None = field(default=None, repr=False)


def url_key(url: str) -> str:
    """The stable sample key of a URL sample: a hash of the URL as listed (whitespace stripped)."""
    return "url-" + hashlib.sha256(url.strip().encode()).hexdigest()[:32]


def url_sample_key(url: str | None, source_path: str, index: int) -> str:
    """``url_key`` of the URL; a row with no URL gets a key of its own (list path + row index), so that
    several such rows neither share a key nor pass for duplicates of each other."""
    if url and url.strip():
        return url_key(url)
    return "url-none-" + hashlib.sha256(f"{source_path}#{index}".encode()).hexdigest()[:24]


def url_hash64(urls: list[str]) -> np.ndarray:
    """64-bit hashes of URLs (for dataset-wide URL de-duplication without keeping the strings)."""
    out = np.empty(len(urls), dtype=np.uint64)
    for i, u in enumerate(urls):
        u = (u or "").strip()
        # 0 marks "no URL": such rows are never duplicates of each other (1 in 2^64 that a real URL hashes to 0)
        out[i] = int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "little") if u else 0
    return out

REASONS.update({
    "internal_error": "an unexpected exception while processing this one sample (a bug: report it)",
    "truncated_archive": "a tar ends early (interrupted download): its readable samples are kept, this row stands "
                         "for the rest and names the tar",
    "bad_archive": "a file listed as a tar cannot be read as one at all",
    "blocked_address": "the host resolves to a loopback/private/link-local/multicast/reserved address and "
                       "download.allow_networks does not allow it (also checked after each redirect)",
    "too_small": "the shorter original side is below ingest.filters.min_side",
    "aspect_ratio": "longer / shorter side above ingest.filters.max_aspect_ratio with aspect_action 'reject'",
    "score_filter": "a kept source column (COYO scores) is outside ingest.filters.min_scores / max_scores, or missing",
    "no_caption": "an image sample without a caption while ingest.text.require_caption is set",
    "low_quality": "a text-only document fails a quality rule of ingest.text (the detail names the rule)",
})
