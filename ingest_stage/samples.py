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
    ground_truth: dict[str, Any] | None = field(default=None, repr=False)


def url_key(url: str) -> str:
    """The stable sample key of a URL sample: a hash of the URL as listed (whitespace stripped)."""
    return "url-" + hashlib.sha256(url.strip().encode()).hexdigest()[:32]


def url_hash64(urls: list[str]) -> np.ndarray:
    """64-bit hashes of URLs (for dataset-wide URL de-duplication without keeping the strings)."""
    out = np.empty(len(urls), dtype=np.uint64)
    for i, u in enumerate(urls):
        out[i] = int.from_bytes(hashlib.blake2b(u.strip().encode(), digest_size=8).digest(), "little")
    return out

REASONS["internal_error"] = "an unexpected exception while processing this one sample (a bug: report it)"
