"""The stage process's CPU per shard (``getrusage`` of this process: reading the shard, Ray submits and results,
Parquet, commit, all threads), 16 shards of 32 images passed one at a time, then 16 passed 8 at a time, per
labeler (tiny profile, Ray runner, the labeler's actor pool warm). CPU time, unlike the bench_labelers ratio,
barely moves with the machine's load, so an A/B of two trees (run this in each) shows the stage's own cost.

    PYTHONPATH=. python bench/bench_stage_cpu.py t5,clip
"""

import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ["RAY_worker_niceness"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



def main() -> None:
    import ray
    import torch

    from bench.bench_labelers import images, make_labeler, release
    from fourm_core import ArtifactStore, DatasetConfig
    from pseudolabel.stage import run_shard
    from pseudolabel.testing import commit_images

    torch.set_num_threads(1)
    names = (sys.argv[1] if len(sys.argv) > 1 else "t5,clip").split(",")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.getcwd()}})
    shard = 0
    with tempfile.TemporaryDirectory() as tmp:
        imgs = images(32)
        caps = [f"A test caption number {i}. It has two sentences." for i in range(32)]
        store = ArtifactStore(os.path.join(tmp, "store"))
        for s in range(33 * len(names)):
            commit_images(store, "bench", s, [(f"b{s}-{i}", im, c) for i, (im, c) in enumerate(zip(imgs, caps))])
        for name in names:
            probe = make_labeler(name, "tiny", None, 1, None)
            model_dir = os.path.join(tmp, name)
            probe.save(probe.seeded_tiny(), model_dir)
            st = {k: v for k, v in make_labeler(name, "tiny", model_dir, 1, None).settings.model_dump().items()
                  if v is not None}
            cfg = DatasetConfig(name="bench", sources=[{"kind": "synthetic"}],
                                pseudolabel={"runner": "ray", "labelers": [name], "settings": {name: st}})
            run_shard(store, cfg, shard, force=True)  # warm-up: the pool starts, the model loads
            shard += 1
            out = []
            for in_flight in (1, 8):
                shards = list(range(shard, shard + 16))
                shard += 16
                cpu, wall = time.process_time(), time.perf_counter()
                with ThreadPoolExecutor(in_flight) as pool:
                    for f in [pool.submit(run_shard, store, cfg, s, force=True) for s in shards]:
                        f.result()
                out.append(f"in flight {in_flight}: stage-process CPU {1000 * (time.process_time() - cpu) / 16:.1f} "
                           f"ms/shard, wall {1000 * (time.perf_counter() - wall) / 16:.1f} ms/shard")
            print(name, "; ".join(out), f"(load {os.getloadavg()[0]:.1f})", flush=True)
            release()
    ray.shutdown()


if __name__ == "__main__":
    main()
