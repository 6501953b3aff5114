"""How much a tiny model labeler slows down when the stage's other work runs beside it on this machine.

    PYTHONPATH=. python bench/bench_model_interference.py --labelers clip,dinov2

The labeler stage runs each model in a Ray actor while, on the same cores, the actor's decode thread, the
driver (reading, Parquet, commit) and Ray itself work on the neighbouring shards. ``bench_labelers.py`` found the
actor's model busy 99 % of the time yet 30 % slower per shard than the bare loop; this bench separates the causes.
Per labeler it times ``label_batch`` over one 32-image shard (1 torch thread, like the bench's actors): alone,
beside a thread of the same process decoding JPEGs without pause with Pillow (the GIL is shared: Pillow parses
markers in Python), beside such a thread running the stage's own decode (``fourm_core.image_decode``: OpenCV,
one GIL-free C call per image), beside another process decoding JPEGs (only the cores are shared), and beside a
process running pure Python.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import tempfile
import threading
import time

import numpy as np

from bench_labelers import bare, images, make_labeler


def _jpegs(n: int) -> list[bytes]:
    from PIL import Image

    out = []
    for a in images(n):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _pillow(jpeg: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def _stage_decode(jpeg: bytes) -> np.ndarray:
    from fourm_core.image_decode import decode_image

    return decode_image(jpeg)


def _decode_until(stop, decode=_pillow) -> None:
    jpegs = _jpegs(32)
    while not stop.is_set():
        for j in jpegs:
            decode(j)


def _python_until(stop) -> None:
    x = 0
    while not stop.is_set():
        for i in range(10_000):
            x += i


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labelers", default="clip,dinov2,imagebind")
    ap.add_argument("--n", type=int, default=32, help="images per shard")
    ap.add_argument("--repeats", type=int, default=8, help="shards timed per condition")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    print(f"1 torch thread, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; ms per {args.n}-image "
          "shard of label_batch")
    imgs, caps = images(args.n), ["a caption"] * args.n
    for name in args.labelers.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            probe = make_labeler(name, "tiny", None, 1, None)
            probe.save(probe.seeded_tiny(), tmp)
            lab = make_labeler(name, "tiny", tmp, 1, None)
            lab.setup()
        bare(lab, imgs, caps)  # warm-up

        def timed() -> float:
            t = time.perf_counter()
            for _ in range(args.repeats):
                bare(lab, imgs, caps, warm=False)
            return (time.perf_counter() - t) / args.repeats * 1e3

        alone = timed()
        threads = {}
        for what, decode in (("a Pillow", _pillow), ("the stage's", _stage_decode)):
            stop_t = threading.Event()
            th = threading.Thread(target=_decode_until, args=(stop_t, decode), daemon=True)
            th.start()
            threads[what] = timed()
            stop_t.set()
            th.join()
        beside = {}
        for what, fn in (("decode process", _decode_until), ("pure-Python process", _python_until)):
            stop = mp.Event()
            proc = mp.Process(target=fn, args=(stop,), daemon=True)
            proc.start()
            time.sleep(1.0)  # its start-up (imports, JPEG encoding) is not what is measured
            beside[what] = timed()
            stop.set()
            proc.join()
        again = timed()
        base = (alone + again) / 2
        print(f"{name:<10} alone {alone:.1f} / {again:.1f}; " + "; ".join(
                  f"beside {k} decode thread {v:.1f} ({(v / base - 1) * 100:+.0f} %)" for k, v in threads.items())
              + "; " + "; ".join(
                  f"beside a {k} {v:.1f} ({(v / base - 1) * 100:+.0f} %)" for k, v in beside.items()))


if __name__ == "__main__":
    main()
