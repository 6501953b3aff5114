"""Downloader benchmark: images/s end to end (HTTP fetch + decode + resize + encode) vs decode+resize alone.

    PYTHONPATH=. python bench/bench_downloader.py [--n 300] [--concurrency 8 16 32] [--repeats 5] [--no-pin]

A loopback HTTP server in a separate process serves a few hundred real-size JPEGs (640x480 to 1024x768,
made from scikit-image's photos with random crops, flips and colour jitter). "decode+resize alone" runs
the same per-image work (ingest_stage.imageproc.process_bytes: decode, EXIF, RGB, resize, digest, encode)
on the same bytes already in memory, with one thread per measured core. "end to end" runs a real shard
through ingest_stage.builder.build_image_shard (URL list -> downloader threads -> the same processing ->
tables). The target is end to end >= 0.8 x decode+resize alone: the network I/O is overlapped with pixel
work.

Core pinning (on by default where there are >= 2 usable cores; --no-pin turns it off): a production image
host is another machine, so the loopback server's CPU must not be taken from the measured work. The
server process is pinned to the first usable core and this process (decode+resize alone AND end to end,
so both sides of the ratio) to the others, with one decode thread per measured core on both sides. The
CPU-bound ratio (CPU of this process per image: alone / end to end) is printed as well; it does not
depend on where the server runs. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from fourm_core.config import DatasetConfig
from ingest_stage.builder import build_image_shard
from ingest_stage.imageproc import process_bytes
from ingest_stage.plan import build_plan


def make_images(n: int, seed: int = 0) -> list[bytes]:
    """n JPEGs of 640x480..1024x768 from skimage's colour photos, jittered so each one is different."""
    import skimage.data as d

    photos = [d.astronaut(), d.chelsea(), d.coffee(), d.rocket(), d.hubble_deep_field(), d.stereo_motorcycle()[0],
              d.retina(), d.immunohistochemistry()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        src = Image.fromarray(photos[i % len(photos)])
        w, h = int(rng.integers(640, 1025)), int(rng.integers(480, 769))
        # random crop of at least half the photo, scaled to (w, h): real-size, real-content JPEGs
        cw, ch = int(src.width * rng.uniform(0.5, 1)), int(src.height * rng.uniform(0.5, 1))
        x0, y0 = int(rng.integers(0, src.width - cw + 1)), int(rng.integers(0, src.height - ch + 1))
        im = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = np.asarray(im).astype(np.float32) * rng.uniform(0.8, 1.2, 3)
        buf = io.BytesIO()
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=int(rng.integers(80, 96)))
        out.append(buf.getvalue())
    return out


def _serve(folder: str, port_q: "mp.Queue[int]") -> None:
    """The loopback server (own process, so its CPU use does not take the benchmark's GIL)."""
    files = {f"/{p.name}": p.read_bytes() for p in Path(folder).glob("*.jpg")}

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY, as image hosts and CDNs set it (nginx's tcp_nodelay is on by default): with Nagle the
        # body, written after the headers, waits for the client's delayed ACK (~13 ms per request here)
        disable_nagle_algorithm = True

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            body = files.get(self.path.split("?")[0])
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    httpd.daemon_threads = True
    port_q.put(httpd.server_address[1])
    httpd.serve_forever()


def decode_resize_alone(images: list[bytes], cfg: DatasetConfig, workers: int) -> tuple[float, float]:
    """(images/s, CPU ms per image of this process) for the per-image work alone, bytes in memory."""
    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda b: process_bytes(b, cfg.ingest), images))
    return len(images) / (time.perf_counter() - t0), (time.process_time() - c0) * 1000 / len(images)


def end_to_end(cfg: DatasetConfig, n: int, earlier=None) -> tuple[float, float]:
    """(images/s, CPU ms per image of this process: HTTP client + processing + filters + the dedup decision
    for the shard against ``earlier`` committed samples; the server runs elsewhere)."""
    plan = build_plan(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    out = build_image_shard(plan, 0)
    if earlier is not None:
        dedup_decision(out, earlier)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    if out.stats["ok"] != n:
        raise RuntimeError(f"only {out.stats['ok']}/{n} images came through: {out.stats['by_reason']}")
    return n / dt, cpu * 1000 / n


def synthetic_earlier(n: int):
    """An index of ``n`` committed samples for the dedup decision to check against (random digests and pHashes,
    in parts of 1000 as a store holds them)."""
    import pyarrow as pa

    from ingest_stage.dedup import EarlierIndex

    rng = np.random.default_rng(1)
    index = EarlierIndex(4)
    for s in range(0, n, 1000):
        m = min(1000, n - s)
        index.add(f"other/images/{s // 1000}", "other", s // 1000, pa.table({
            "sample_key": [f"k{i}" for i in range(s, s + m)], "digest": [f"{i:064x}" for i in range(s, s + m)],
            "phash": rng.integers(-2**63, 2**63 - 1, m, dtype=np.int64)}))
    return index


def dedup_decision(out, earlier) -> None:
    """The dedup stage's decision for this shard (exact + pHash within distance 4) against ``earlier``, from the
    shard's digest file (the index of earlier parts is kept per process and extended part by part: not timed)."""
    import pyarrow.parquet as pq

    from ingest_stage.builder import DIGESTS_SUFFIX
    from ingest_stage.dedup import decide

    t = pq.read_table(io.BytesIO(out.extra_files["images"][DIGESTS_SUFFIX]))
    phashes = np.asarray(t.column("phash").to_numpy()).astype(np.int64).view(np.uint64)
    decide(t.column("sample_key").to_pylist(), t.column("digest").to_pylist(), phashes, earlier, "bench", 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shorter-side", type=int, default=256)
    ap.add_argument("--no-pin", action="store_true", help="let the server share the measured cores")
    ap.add_argument("--earlier", type=int, default=100_000,
                    help="committed samples the dedup decision checks the shard against (0: no dedup step)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    images = make_images(args.n)
    mb = sum(map(len, images)) / 1e6
    print(f"made {len(images)} JPEGs ({mb:.1f} MB, mean {mb / len(images) * 1000:.0f} KB) in "
          f"{time.perf_counter() - t0:.1f}s; cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, data in enumerate(images):
            Path(tmp, f"{i:05d}.jpg").write_bytes(data)
        ctx = mp.get_context("spawn")
        q: mp.Queue[int] = ctx.Queue()
        server = ctx.Process(target=_serve, args=(tmp, q), daemon=True)
        server.start()
        port = q.get(timeout=60)
        usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []  # not on macOS
        if not args.no_pin and len(usable) >= 2:
            # Threads inherit the affinity of the thread that starts them: set here, before any pool exists,
            # it holds for every worker of both measurements (and the builder sizes its decode slots by it).
            os.sched_setaffinity(server.pid, usable[:1])
            os.sched_setaffinity(0, usable[1:])
            print(f"server pinned to core {usable[0]}; measured work on cores {usable[1:]}")
        else:
            print(f"not pinned: server and measured work share the cores {usable or os.cpu_count()}")
        tsv = Path(tmp, "list.tsv")
        tsv.write_text("".join(f"http://127.0.0.1:{port}/{i:05d}.jpg\timage {i}\n" for i in range(len(images))))
        try:
            # one decode thread per measured core, as the builder uses
            workers = len(os.sched_getaffinity(0)) if usable else (os.cpu_count() or 1)

            def cfg(conc: int) -> DatasetConfig:
                return DatasetConfig.model_validate({
                    "name": "bench", "sources": [{"kind": "url_tsv", "path": str(tsv)}],
                    "ingest": {"shard_size": len(images), "shorter_side": args.shorter_side,
                               "download": {"concurrency": conc, "timeout_s": 30,
                                            "allow_networks": ["127.0.0.0/8"]}}})  # the loopback server

            base_cfg = cfg(args.concurrency[0])
            earlier = synthetic_earlier(args.earlier) if args.earlier else None
            decode_resize_alone(images[:20], base_cfg, workers)  # warm-up (imports, libjpeg tables)
            # Interleave the measurements round by round: the machine is shared, and load that comes and
            # goes then hits both sides alike instead of one whole series.
            base: list[tuple[float, float]] = []
            e2e: dict[int, list[tuple[float, float]]] = {c: [] for c in args.concurrency}
            for _ in range(args.repeats):
                base.append(decode_resize_alone(images, base_cfg, workers))
                for conc in args.concurrency:
                    e2e[conc].append(end_to_end(cfg(conc), len(images), earlier))
            one, _ = decode_resize_alone(images, base_cfg, 1)
            med = statistics.median(x for x, _ in base)
            base_cpu = statistics.median(c for _, c in base)
            print(f"decode+resize alone ({workers} threads): " + ", ".join(f"{x:.1f}" for x, _ in base)
                  + f" images/s (median {med:.1f}); 1 thread: {one:.1f} images/s; CPU {base_cpu:.1f} ms/image")
            for conc, runs in e2e.items():
                xs = [x for x, _ in runs]
                cpu = statistics.median(c for _, c in runs)
                ratio = statistics.median(xs) / med
                # each end-to-end run against the decode+resize run of its own round: slow drifts in the
                # machine's speed (other tenants) then cancel out
                rounds = [x / b for x, (b, _) in zip(xs, base)]
                cpu_rounds = [bc / c for (_, c), (_, bc) in zip(runs, base)]
                print(f"end to end (download.concurrency={conc}): " + ", ".join(f"{x:.1f}" for x in xs)
                      + f" images/s (median {statistics.median(xs):.1f}); ratio of medians {ratio:.2f}, per round "
                      + ", ".join(f"{r:.2f}" for r in rounds) + f" (median {statistics.median(rounds):.2f}; target >= 0.8); "
                      f"CPU {cpu:.1f} ms/image -> CPU-bound ratio {base_cpu / cpu:.2f}, per round "
                      + ", ".join(f"{r:.2f}" for r in cpu_rounds) + f" (median {statistics.median(cpu_rounds):.2f})")
            # On a shared, oversubscribed machine wall-clock rates swing with other people's load; the CPU
            # cost per image swings much less. The CPU-bound ratio is what end to end would reach on idle
            # cores (the loopback server's own CPU is excluded: a real image host is another machine).
            print(f"load average after: {os.getloadavg()[0]:.2f}")
        finally:
            server.terminate()
            server.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
