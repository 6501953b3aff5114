"""HTTP(S) fetching for URL-list sources: timeouts, bounded retries with backoff, size cap, redirect cap.

One :class:`Downloader` is shared by the worker threads of a shard (urllib3's PoolManager and its
per-host connection pools are thread-safe). urllib3 is used rather than a richer client because the
client's CPU per request is charged to every image: on an 87 KB JPEG it costs about half of httpx's
(docs/ingest.md, Benchmark). Its own retries and redirect following are off: both are done here, so that
they are bounded, backed off, loop-checked and scheme-checked the same way. Connections go only to public
addresses (checked on the address actually connected to; ``download.allow_networks`` for trusted lists). Every failure becomes a
:class:`SampleFailure` with a stable reason code; nothing here raises anything else for a bad URL or a
bad server.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (ConnectTimeoutError, DecodeError, HTTPError, LocationValueError, NameResolutionError,
                                NewConnectionError, ProtocolError, ProxyError, ReadTimeoutError, SSLError)

from fourm_core.config import DownloadConfig

from .samples import SampleFailure

_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 1 << 16


class _Retryable(Exception):
    """A transient failure (5xx, 429, connection error): retried with backoff, then a SampleFailure."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Fetched:
    data: bytes
    final_url: str
    attempts: int


def check_url(url: str) -> None:
    """Refuse anything but absolute http(s) URLs (file://, ftp://, data: ... are a security risk)."""
    if not url.strip():
        raise SampleFailure("bad_url", "no URL (empty or null in the list)")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise SampleFailure("bad_url", f"{url!r}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise SampleFailure("bad_scheme", f"scheme {parts.scheme or '(none)'!r} refused; only http/https are fetched")
    if not parts.hostname:
        raise SampleFailure("bad_url", f"{url!r} has no host")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedAddress(Exception):
    """The host resolves only to addresses an untrusted URL list must not reach."""


def is_blocked(ip: str, allow: tuple[Network, ...] = ()) -> bool:
    """True for loopback, private, link-local, multicast, reserved, shared and unspecified addresses (anything
    not globally routable, incl. IPv4-mapped IPv6 forms of them) unless an ``allow`` network holds the address."""
    addr = ipaddress.ip_address(ip.split("%")[0])  # drop an IPv6 zone id
    if isinstance(addr, ipaddress.IPv6Address):
        # an IPv4 address inside an IPv6 one (mapped ::ffff:a.b.c.d, 6to4 2002::/16, Teredo) is judged as itself
        embedded = addr.ipv4_mapped or addr.sixtofour or (addr.teredo[1] if addr.teredo else None)
        if embedded is not None:
            addr = embedded
    if any(addr in net for net in allow):
        return False
    return not addr.is_global or addr.is_multicast


class _GuardedConnection:
    """Mixin for urllib3 connections: resolve the host here, refuse blocked addresses, and connect to the very
    address that was checked (so a DNS answer that changes between check and connect, DNS rebinding, cannot
    slip through). Every new connection goes through it: the first request, each redirect hop, each retry."""

    allow: tuple[Network, ...] = ()

    def _new_conn(self) -> socket.socket:  # type: ignore[override]
        host = self._dns_host  # type: ignore[attr-defined]
        try:
            infos = socket.getaddrinfo(host, self.port, type=socket.SOCK_STREAM)  # type: ignore[attr-defined]
        except socket.gaierror as exc:
            raise NameResolutionError(host, self, exc) from exc  # type: ignore[arg-type]
        ips = list(dict.fromkeys(info[4][0] for info in infos))
        allowed = [ip for ip in ips if not is_blocked(ip, self.allow)]
        if not allowed:
            raise BlockedAddress(f"{host} resolves to {', '.join(ips)}: not a public address; allow it with "
                                 f"ingest.download.allow_networks if this list is trusted")
        self._dns_host = allowed[0]  # connect to the checked address; TLS still verifies the host name
        try:
            sock = super()._new_conn()  # type: ignore[misc]
        finally:
            self._dns_host = host
        peer = sock.getpeername()[0]
        if is_blocked(peer, self.allow):  # belt and braces: what we are actually connected to
            sock.close()
            raise BlockedAddress(f"{host}: connected to {peer}, not a public address")
        return sock


def _guarded_pools(allow: tuple[Network, ...]) -> dict[str, type]:
    """Connection-pool classes whose connections refuse blocked addresses (all but ``allow``)."""
    http = type("GuardedHTTPConnection", (_GuardedConnection, HTTPConnection), {"allow": allow})
    https = type("GuardedHTTPSConnection", (_GuardedConnection, HTTPSConnection), {"allow": allow})
    return {"http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https})}


@lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one loads the CA bundle (~80 ms of CPU), which
    would otherwise be paid by every shard. SSLContext is safe to share between threads and clients."""
    return ssl.create_default_context(cafile=certifi.where())


class Downloader:
    """Fetches URLs with the limits of a :class:`DownloadConfig`. Thread-safe; use as a context manager."""

    def __init__(self, cfg: DownloadConfig, sleep: Callable[[float], None] = time.sleep):
        self.cfg = cfg
        self._sleep = sleep
        self._pool = urllib3.PoolManager(
            num_pools=max(10, cfg.concurrency),  # hosts kept open at once (least recently used ones are closed)
            maxsize=cfg.concurrency,  # keep-alive connections per host: one per worker thread
            timeout=urllib3.Timeout(connect=cfg.timeout_s, read=cfg.timeout_s),
            retries=False,  # retried here, with backoff; redirects followed by hand (capped, loop- and scheme-checked)
            headers={"User-Agent": cfg.user_agent, "Accept": "image/*,*/*;q=0.8"},
            ssl_context=_ssl_context(),
        )
        allow = tuple(ipaddress.ip_network(n, strict=False) for n in cfg.allow_networks)
        self._pool.pool_classes_by_scheme = _guarded_pools(allow)  # an instance attribute: the module's dict stays
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()  # retries, bytes: reported in the shard's stats

    def __enter__(self) -> "Downloader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.clear()

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def fetch(self, url: str) -> Fetched:
        """The body of ``url``; raises SampleFailure with a reason code on any failure."""
        url = url.strip()
        check_url(url)
        attempt = 0
        while True:
            attempt += 1
            try:
                data, final = self._fetch_once(url)
                self._count("bytes", len(data))
                return Fetched(data, final, attempt)
            except _Retryable as exc:
                if attempt > self.cfg.retries:
                    raise SampleFailure(exc.reason, f"{exc.detail} (after {attempt} attempts)") from None
                self._count("retries")
                self._sleep(self.cfg.backoff_s * (2 ** (attempt - 1)))

    def _fetch_once(self, url: str) -> tuple[bytes, str]:
        seen = {url}
        current = url
        for _ in range(self.cfg.max_redirects + 1):
            resp = None
            try:
                resp = self._pool.urlopen("GET", current, redirect=False, preload_content=False)
                status = resp.status
                location = resp.headers.get("location")
                if status in _REDIRECTS and location is not None:
                    nxt = urljoin(current, location)
                    check_url(nxt)
                    if nxt in seen:
                        raise SampleFailure("redirect_loop", f"{current} -> {nxt} was already visited")
                    seen.add(nxt)
                    current = nxt
                    continue
                if status >= 500 or status == 429:
                    raise _Retryable("http_5xx" if status >= 500 else "http_429", f"HTTP {status} from {current}")
                if status != 200 and status != 203:
                    raise SampleFailure(f"http_{status}", f"HTTP {status} from {current}")
                data = self._read_body(resp, current)
                resp.release_conn()  # read to the end: the connection goes back to the pool (urllib3 did so at EOF)
                resp = None
                return data, current
            except BlockedAddress as exc:
                raise SampleFailure("blocked_address", str(exc)) from None
            except (NewConnectionError, ConnectTimeoutError) as exc:  # refused, unreachable, connect timeout
                raise _Retryable("connection_error", f"{type(exc).__name__}: {exc}") from None
            except ReadTimeoutError:
                raise SampleFailure("timeout", f"no data for {self.cfg.timeout_s}s from {current}") from None
            except LocationValueError as exc:
                raise SampleFailure("bad_url", f"{current}: {exc}") from None
            except DecodeError as exc:  # a broken Content-Encoding (gzip/deflate/br/zstd) body
                raise SampleFailure("decode_error", f"body of {current} could not be decoded: {exc}") from None
            except (ProtocolError, SSLError, ProxyError) as exc:  # reset, truncated, TLS errors: often transient
                raise _Retryable("connection_error", f"{type(exc).__name__}: {exc}") from None
            except HTTPError as exc:  # anything else urllib3 refuses (odd URLs, headers): final, not retried
                raise SampleFailure("connection_error", f"{type(exc).__name__}: {exc}") from None
            finally:
                if resp is not None:  # not read to the end (redirect, error status, refused body): drop the connection
                    resp.close()
                    resp.release_conn()
        raise SampleFailure("too_many_redirects", f"more than {self.cfg.max_redirects} redirects from {url}")

    def _read_body(self, resp: urllib3.BaseHTTPResponse, url: str) -> bytes:
        cap = self.cfg.max_bytes
        declared = resp.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise SampleFailure("too_large", f"Content-Length {declared} > download.max_bytes {cap}")
        # The read timeout bounds each read; this deadline bounds the whole body (a server dripping one
        # byte per second would otherwise hold a worker forever).
        deadline = time.monotonic() + self.cfg.timeout_s
        chunks: list[bytes] = []
        total = 0
        # read1: whatever has arrived (decoded; at most 64 KiB), so the cap and the deadline are checked as
        # bytes arrive instead of after a buffer fills
        while chunk := resp.read1(_CHUNK):
            total += len(chunk)
            if total > cap:
                raise SampleFailure("too_large", f"body exceeds download.max_bytes {cap} (stopped reading)")
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise SampleFailure("timeout", f"body of {url} not complete after {self.cfg.timeout_s}s")
        if total == 0:
            raise SampleFailure("empty_body", f"HTTP {resp.status} with an empty body from {url}")
        return b"".join(chunks)
