"""Per-labeler throughput on this machine: the bare model loop vs the same labeler inside the stage.

    PYTHONPATH=. python bench/bench_labelers.py --profile tiny --n 8,32
    PYTHONPATH=. python bench/bench_labelers.py --profile tiny --n 8,32 --in-flight 1   # one shard at a time
    PYTHONPATH=. python bench/bench_labelers.py --profile full --labelers dinov2,depth --n 4,12 --rounds 2
    PYTHONPATH=. python bench/bench_labelers.py --labelers clip,dinov2,imagebind,t5 --shards 32   # a GPU box

On a machine with a GPU the Ray session sees it, the stage's labeler actors take their usual GPU fraction
(``num_gpus`` of the labeler's settings, else its declared resources) and the bare loop's actor takes the same, so
both label on the GPU; the header line says how many CPUs and GPUs the session has (``--cpus``: all cores).

``bare``: decoded 224² images, the labeler's own ``label_batch`` (pre- and post-processing included) in
batches, after one warm-up batch, in a Ray actor of its own: Ray runs its workers at nice 15, so a bare loop in
this (nice 0) process would win CPU from the stage's actors on a shared machine and skew the ratio. That actor
takes the stage actors' process policy (``fourm_core.allocator``: freed memory kept, tokenizers on one thread). Bare does
not decode JPEGs. ``stage``: ``run_shard`` on committed shards of the same images (read, JPEG decode, the
labeler's Ray actor pool, Arrow/Parquet, manifest commit; the Ray session is up already). Since the Ray pass's
first step decodes its own rows (``pseudolabel.ray_pass.DECODE_IN_FIRST_STEP``; before: separate decode tasks),
the stage's actor decodes in a thread beside the model while bare still gets decoded arrays: the decode is
charged to the stage, as before, so the ratio stays the stricter comparison; ``--decode-tasks`` measures the
previous path (decode tasks) for an A/B. ``--shards`` shards per round passed the way
build-dataset passes them: a thread per shard from one pool of ``--in-flight`` threads for the whole bench
(default: the flow's ``FOURM_MAX_PARALLEL_UNITS``, its task runner's pool size), all sharing the labeler's
actor pool, so one shard's decode and commit overlap another's labelling. Each round still pays the
pipeline's fill (the first call's decode) and drain (the last shard's commit), which a run pays once;
``--in-flight 1`` measures one shard at a time (every shard pays both).
Per labeler: one warm-up shard of n1 images (first-use imports, the actor pool's start and model load: the
pool then lives across the run's shards, as in a build-dataset run), then ``--rounds`` rounds of one bare pass
over shards x n2 images followed by the stage on ``--shards`` new shards of n2 images, so bare and stage are
measured under the same load on a shared machine. Throughputs are totals over the rounds; ``ratio`` = stage /
bare, with the lowest and highest round's ratio beside it, and the load average after the labeler.
``--threads`` (torch threads, the same in the bare loop and in the stage's actor) defaults to all cores but one:
with every core in torch the bare loop owns the machine while the stage must also decode and commit on it,
which a deployment does not ask of the cores it reserves for the model (the pools reserve at most CPUs - 1).
A second line per labeler gives CPU milliseconds per shard: the model's (the bare loop's process CPU), the JPEG
decode's (timed here), the stage process's (``getrusage`` of this process over the stage rounds: reading the
shard, Ray submits and results, Parquet, commit), the labeler actors' (their process CPU: the model, its
first step's decode, Ray's call handling; read from /proc, Linux only), and ``cap`` = model / (model + decode +
stage): on saturated cores the ratio cannot exceed it, whatever the overlap, so a light model's ratio is bounded
by the work around it.
A third line gives the whole machine's CPU milliseconds per shard over the stage rounds (``/proc/stat``: the
stage's processes, Ray's daemons, the kernel's writeback of the committed files, anything else running) and
``bound`` = cores x bare wall / machine CPU: a stage round cannot take less wall time than its CPU spread over
every core, so with that much CPU spent per shard the ratio cannot exceed the bound, however well it overlaps.
Target: ratio >= 0.85 for every model labeler at the tiny profile with 32-image shards.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Ray starts its workers at nice 15; on a shared machine they would then get a sliver of the CPU next to
# everyone's nice-0 jobs, and the figures would measure the neighbours. Bare and stage both run in Ray workers.
os.environ.setdefault("RAY_worker_niceness", "0")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def images(n: int, size: int = 224) -> list[np.ndarray]:
    from pseudolabel.testing import PHOTOS, photo, synthetic_image

    base = [photo(p, size)[:size, :size] for p in PHOTOS] + [synthetic_image(i, size) for i in range(4)]
    return [base[i % len(base)] for i in range(n)]


def make_labeler(name: str, profile: str, model_dir: str | None, threads: int, batch_size: int | None):
    from pseudolabel.registry import labeler_class

    cls = labeler_class(name)
    kw = {"batch_size": batch_size} if batch_size else {}
    if cls.uses_model:
        kw |= {"model": model_dir or "tiny", "torch_threads": threads}
    return cls(cls.Settings(**kw), available=frozenset())


class BareLoop:
    """The bare model loop in a Ray worker (same niceness and process kind as the stage's actors)."""

    def __init__(self, name: str, profile: str, model_dir: str | None, threads: int, batch_size: int | None):
        import torch

        try:  # the stage's actors keep freed memory in their heap (fourm_core.allocator): so does the bare loop
            from fourm_core.allocator import retain_freed_memory, single_threaded_tokenizers

            retain_freed_memory()
            single_threaded_tokenizers()
        except ImportError:  # an older tree
            pass
        torch.set_num_threads(threads)
        self.lab = make_labeler(name, profile, model_dir, threads, batch_size)
        self.lab.setup()

    def run(self, imgs: list[np.ndarray], captions: list[str]) -> tuple[float, float]:
        """Images per second, and this process's CPU seconds over the timed loop (the model's CPU)."""
        cpu = time.process_time()
        rate = bare(self.lab, imgs, captions, warm=False)
        return rate, time.process_time() - cpu


def bare(lab, imgs: list[np.ndarray], captions: list[str], warm: bool = True) -> float:
    """Images per second of ``lab.label_batch`` over ``imgs`` in the labeler's batch size (``warm``: after one
    untimed warm-up batch)."""
    from pseudolabel.spec import Batch

    bs = lab.batch_size
    batches = [Batch([str(i) for i in range(s, min(s + bs, len(imgs)))], imgs[s:s + bs], captions[s:s + bs])
               for s in range(0, len(imgs), bs)]
    if warm:
        lab.label_batch(batches[0])
    t = time.perf_counter()
    for b in batches:
        lab.label_batch(b)
    return len(imgs) / (time.perf_counter() - t)


@functools.cache
def shard_threads(in_flight: int) -> ThreadPoolExecutor:
    """The threads that pass shards, for the whole bench: build-dataset's task runner is one pool of
    ``FOURM_MAX_PARALLEL_UNITS`` threads for the whole run (a new pool per round cost each shard ~1 ms more CPU
    for a first call in a fresh thread: Ray's and Arrow's per-thread state)."""
    return ThreadPoolExecutor(max(1, in_flight), thread_name_prefix="bench-shard")


def stage(name: str, settings: dict, root: str, imgs: list[np.ndarray], captions: list[str], shards: list[int],
          in_flight: int = 1) -> tuple[float, float, float]:
    """Seconds to pseudo-label ``shards`` (each a committed shard of ``imgs``, committed before the clock starts)
    with at most ``in_flight`` of them passing at once, as build-dataset runs them (a thread per shard from one
    pool, sharing the labeler's actor pool); the stage process's CPU seconds meanwhile (all its threads: reading,
    Ray submits and results, Parquet, commit); and the whole machine's (:func:`machine_cpu`)."""
    from fourm_core import ArtifactStore, DatasetConfig
    from pseudolabel.stage import run_shard
    from pseudolabel.testing import commit_images

    store = ArtifactStore(root)
    for shard in shards:
        commit_images(store, "bench", shard, [(f"b{shard}-{i}", im, c) for i, (im, c) in enumerate(zip(imgs, captions))])
    cfg = DatasetConfig(name="bench", sources=[{"kind": "synthetic"}],
                        pseudolabel={"runner": "ray", "labelers": [name], "settings": {name: settings}})
    t, cpu, busy = time.perf_counter(), time.process_time(), machine_cpu()
    for f in [shard_threads(in_flight).submit(run_shard, store, cfg, shard, force=True) for shard in shards]:
        f.result()
    return time.perf_counter() - t, time.process_time() - cpu, machine_cpu() - busy


def machine_cpu() -> float:
    """CPU seconds every core of this machine has spent busy so far (``/proc/stat``: user, nice, system, irq and
    softirq; not idle, I/O wait or steal): the stage's driver and actors, Ray's daemons, the kernel's writeback of
    the committed files, and anything else running. NaN where there is no ``/proc``."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:8]]
    except OSError:
        return float("nan")
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")


def decode_cpu(imgs: list[np.ndarray], captions: list[str], pixels: bool, repeat: int = 3) -> float:
    """CPU seconds to JPEG-decode one shard of ``imgs`` (what the stage's first step does beside the model; 0 for a
    pass that reads no pixels), in this process, best of ``repeat``."""
    if not pixels:
        return 0.0
    from pseudolabel.runner import decode_step
    from pseudolabel.testing import images_table

    table = images_table([(f"d{i}", im, c) for i, (im, c) in enumerate(zip(imgs, captions))])
    best = float("inf")
    for _ in range(repeat):
        cpu = time.process_time()
        decode_step(table)
        best = min(best, time.process_time() - cpu)
    return best


def release() -> None:
    """Free the labeler's actor pool before the next labeler (older trees start actors per shard: nothing to do)."""
    try:
        from pseudolabel.actor_pool import release_pools
    except ImportError:
        return
    release_pools()


def actor_cpu() -> float:
    """CPU seconds the labeler actors on this host have used so far (their process CPU: the model, Ray's call
    handling, unpacking and packing each call's rows)."""
    from bench_control_plane import proc_cpu

    if not os.path.isdir("/proc"):
        return float("nan")
    total = 0.0
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if not f.read().startswith(b"ray::_LabelerActor"):
                    continue
        except OSError:  # not a process, or gone meanwhile
            continue
        total += proc_cpu(pid)
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelers", default="canny,color_palette,metadata,depth,normals,semseg,clip,dinov2,imagebind,t5")
    ap.add_argument("--profile", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--n", default="8,32", help="warm-up shard size, measured shard size")
    ap.add_argument("--rounds", type=int, default=3, help="bare / stage rounds per labeler, interleaved")
    ap.add_argument("--shards", type=int, default=8, help="shards per stage round (bare: as many images)")
    ap.add_argument("--in-flight", type=int, default=None,
                    help="shards passing at once (default: build-dataset's FOURM_MAX_PARALLEL_UNITS); 1 = serial")
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="torch threads, bare and in the actor (default: all cores but one, left to decode "
                         "and commit)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=None,
                    help="the stage's actors per labeler (its `concurrency` setting; default: the labeler's, 1); "
                         "the bare loop stays one process")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray session")
    ap.add_argument("--decode-tasks", action="store_true",
                    help="decode JPEGs in separate Ray tasks (the path before DECODE_IN_FIRST_STEP), for an A/B")
    args = ap.parse_args()
    if args.decode_tasks:
        from pseudolabel import ray_pass

        ray_pass.DECODE_IN_FIRST_STEP = False
    import ray
    import torch

    from pseudolabel.ray_pass import _gpus
    from pseudolabel.runner import needs_pixels

    torch.set_num_threads(args.threads)
    n1, n2 = (int(x) for x in args.n.split(","))
    if args.in_flight is None:
        from pipelines.build_dataset import MAX_PARALLEL_UNITS

        args.in_flight = MAX_PARALLEL_UNITS
    k = args.shards
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.getcwd(), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                                       "TRANSFORMERS_VERBOSITY": "error"}})
    gpus = ray.cluster_resources().get("GPU", 0.0)
    print(f"Ray session: {args.cpus} CPUs, {gpus:g} GPU(s); "
          f"torch threads {args.threads}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, "
          f"{args.rounds} interleaved rounds of {k} shards x {n2} images, {args.in_flight} shard(s) in flight, "
          f"decode {'in tasks' if args.decode_tasks else 'in the first step'}")
    print(f"{'labeler':<14}{'profile':<8}{'bare img/s':>11}{'stage img/s':>12}{'ratio':>7}  (min-max of rounds; "
          f"warm-up n={n1}, n={n2})")
    print("  then CPU ms per shard: model (bare loop), decode (this process), stage process (driver: read, Ray, "
          "Parquet, commit), the labeler actors' processes (0 for a model-free labeler: it runs as tasks), and the cap "
          "model / (model + decode + stage) the ratio approaches on saturated cores")
    shard = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.labelers.split(","):
            imgs = images(n2)
            caps = [f"A test caption number {i}. It has two sentences." for i in range(n2)]
            probe = make_labeler(name, "tiny", None, args.threads, args.batch_size)
            model_dir = None
            if probe.uses_model:
                model = probe.seeded_tiny() if args.profile == "tiny" else probe.build_full().eval()
                model_dir = os.path.join(tmp, name)
                probe.save(model, model_dir)
                del model
            # no CPU reservation: a reserving actor would hold a slot the stage's decode tasks need (2 CPUs here);
            # on a GPU the labeler's own fraction, as its stage actors take (else Ray would hide the GPU from it)
            gpu = _gpus(probe, gpus > 0) if probe.uses_model else 0.0
            lab = ray.remote(BareLoop).options(num_cpus=0, num_gpus=gpu or None).remote(
                name, args.profile, model_dir, args.threads, args.batch_size)
            st = {k2: v for k2, v in make_labeler(name, args.profile, model_dir, args.threads, args.batch_size)
                  .settings.model_dump().items() if v is not None}
            if args.concurrency:
                st["concurrency"] = args.concurrency
            root = os.path.join(tmp, "store")
            # one warm-up shard per actor: calls go round-robin, so each actor labels its first call here
            warm = list(range(shard, shard + st.get("concurrency", 1)))
            t_warm, _, _ = stage(name, st, root, imgs[:n1], caps[:n1], warm, args.in_flight)
            shard += len(warm)
            ray.get(lab.run.remote(imgs[:n1], caps[:n1]))  # the bare loop's warm-up
            bare_s, stage_s, model_cpu, stage_cpu, actors_cpu, busy = [], [], 0.0, 0.0, 0.0, 0.0
            for _ in range(args.rounds):
                rate, cpu = ray.get(lab.run.remote(imgs * k, caps * k))
                bare_s.append(k * n2 / rate)
                model_cpu += cpu
                actors_cpu -= actor_cpu()
                wall, cpu, machine = stage(name, st, root, imgs, caps, list(range(shard, shard + k)), args.in_flight)
                actors_cpu += actor_cpu()
                stage_s.append(wall)
                stage_cpu += cpu
                busy += machine
                shard += k
            ray.kill(lab)
            release()
            b, s_ = args.rounds * k * n2 / sum(bare_s), args.rounds * k * n2 / sum(stage_s)
            ratios = [bt / stt for bt, stt in zip(bare_s, stage_s)]
            print(f"{name:<14}{args.profile:<8}{b:>11.3f}{s_:>12.3f}{s_ / b:>7.2f}  ({min(ratios):.2f}-"
                  f"{max(ratios):.2f}; stage s: warm-up {t_warm:.1f} ({len(warm)} shard(s)), rounds "
                  f"{', '.join(f'{t:.2f}' for t in stage_s)}; load {os.getloadavg()[0]:.1f})", flush=True)
            per = args.rounds * k
            m_ms, s_ms = 1000 * model_cpu / per, 1000 * stage_cpu / per
            d_ms = 1000 * decode_cpu(imgs, caps, needs_pixels([probe]))
            print(f"{'':<14}CPU ms/shard: model {m_ms:.1f}, decode {d_ms:.1f}, stage process {s_ms:.1f}, "
                  f"actor {1000 * actors_cpu / per:.1f}; "
                  f"cap {m_ms / (m_ms + d_ms + s_ms):.2f}; bare wall ms/shard {1000 * sum(bare_s) / per:.1f}, "
                  f"stage wall ms/shard {1000 * sum(stage_s) / per:.1f}", flush=True)
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            print(f"{'':<14}machine CPU ms/shard {1000 * busy / per:.1f} over the stage rounds (every process and "
                  f"the kernel); its {cores} cores give {cores * 1000 * sum(stage_s) / per:.1f}; bound "
                  f"{cores * sum(bare_s) / busy:.2f} = cores x bare wall / machine CPU", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
