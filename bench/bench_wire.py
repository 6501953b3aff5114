"""What a chunk of the Ray pass costs to ship between steps: a pickled ``pa.Table`` (Ray's default) against Arrow
IPC bytes (``pseudolabel.runner.to_wire`` / ``from_wire``), per labeler output of one 32-image shard.

    PYTHONPATH=. python bench/bench_wire.py --labelers t5,clip,dinov2,imagebind --n 32

Per labeler (tiny profile): the labeler's step output for ``--n`` decoded 224² images (what an actor returns to the
driver, pixels dropped) and the pass's input chunk (sample keys, captions, JPEG bytes: what the driver sends to the
first step). ``pickle``: ``pickle.dumps`` with protocol 5 and out-of-band buffers, then ``loads``, as Ray
serializes an object; ``wire``: ``to_wire`` then ``from_wire``. ``ray``: ``ray.get(ray.put(x))`` in this process
(the driver's side of a put and a fetch), the table against its wire bytes (+ ``from_wire``). Milliseconds per
chunk, median of ``--repeat``; the load average beside them.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def pickled(table) -> None:
    bufs: list = []
    data = pickle.dumps(table, protocol=5, buffer_callback=bufs.append)
    pickle.loads(data, buffers=bufs)


def wired(table) -> None:
    from pseudolabel.runner import from_wire, to_wire

    from_wire(to_wire(table))


def outputs(name: str, n: int, tmp: str):
    """The labeler's output chunk for ``n`` images (pixels dropped) and the pass's input chunk."""
    import pyarrow as pa

    from bench.bench_labelers import images, make_labeler
    from pseudolabel.runner import decode_step, label_step, needs_pixels
    from pseudolabel.testing import images_table

    imgs = images(n)
    caps = [f"A test caption number {i}. It has two sentences." for i in range(n)]
    inp = images_table([(f"b-{i}", im, c) for i, (im, c) in enumerate(zip(imgs, caps))])
    inp = inp.append_column("_idx", pa.array(range(n), pa.int64()))
    probe = make_labeler(name, "tiny", None, 1, None)
    model_dir = None
    if probe.uses_model:
        model_dir = os.path.join(tmp, name)
        probe.save(probe.seeded_tiny(), model_dir)
    lab = make_labeler(name, "tiny", model_dir, 1, None)
    lab.setup()
    out = label_step(lab, decode_step(inp, needs_pixels([lab])))
    return out.drop_columns(["_rgb", "_h", "_w"]), inp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelers", default="t5,clip,dinov2,imagebind")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--ray", action="store_true", help="also time ray.get(ray.put(x)) (starts a local Ray)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.ray:
        import ray

        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    from pseudolabel.runner import from_wire, to_wire

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; ms per chunk of {args.n} rows "
          f"(median of {args.repeat})")
    print(f"{'chunk':<22}{'cols':>5}{'KiB':>8}{'pickle':>8}{'wire':>8}" + (f"{'ray tbl':>9}{'ray wire':>9}"
                                                                          if args.ray else ""))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.labelers.split(","):
            out, inp = outputs(name, args.n, tmp)
            for what, t in ((f"{name} output", out), (f"{name} input", inp)):
                if what.endswith("input") and name != args.labelers.split(",")[0]:
                    continue  # the input chunk is the same for every labeler
                row = (f"{what:<22}{t.num_columns:>5}{t.nbytes / 1024:>8.1f}{_ms(lambda: pickled(t), args.repeat):>8.2f}"
                       f"{_ms(lambda: wired(t), args.repeat):>8.2f}")
                if args.ray:
                    import ray

                    row += (f"{_ms(lambda: ray.get(ray.put(t)), args.repeat):>9.2f}"
                            f"{_ms(lambda: from_wire(ray.get(ray.put(to_wire(t)))), args.repeat):>9.2f}")
                print(row, f"(load {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
