"""What a Ray actor call adds to a labeler's work: the same call in a loop inside the actor vs through Ray.

    PYTHONPATH=.:bench python bench/bench_actor_call.py --labelers t5 --rows 32
    PYTHONPATH=.:bench python bench/bench_actor_call.py --labelers t5,clip --concurrency 1,2 --in-flight 1,4

``bench_labelers.py`` measures a whole shard's path (read, actor, commit) against the bare model; this bench
isolates the actor. One actor per model labeler (the stage's own actor class, tiny profile, 1 torch thread,
``num_cpus=0``) gets one step of the Ray pass as the stage sends it: ``label_range`` over ``--rows`` rows of
Arrow IPC bytes, decoded in the call when the labeler reads pixels, labelled under the actor's model lock,
returned as Arrow IPC bytes. Printed per ``max_concurrency`` (the stage uses ``actor_pool.CALLS_IN_ACTOR``): the
call's wall and CPU milliseconds when the actor loops over it itself (no Ray between calls), then, for
``--in-flight`` calls outstanding from this driver, the wall milliseconds per call and the actor's CPU
milliseconds per call through Ray; and a no-op call (the bytes echoed back) for Ray's own share. The actor's CPU
is its process CPU (every thread, Ray's included).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("RAY_worker_niceness", "0")  # as bench_labelers: Ray workers at nice 0, like this driver

from pseudolabel.actor_pool import _LabelerActor  # noqa: E402  (after the niceness, which Ray reads at start)


class CallActor(_LabelerActor):
    """The stage's labeler actor, plus its own call in a loop, a no-op call and its process CPU."""

    def echo(self, wire):
        return wire

    def loop(self, wire, rows: int, decode: bool, n: int) -> tuple[float, float]:
        """(wall ms, CPU ms) per call of ``n`` calls made here, one after another."""
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            self.label(0, rows, True, decode, wire)
        return 1e3 * (time.perf_counter() - wall) / n, 1e3 * (time.process_time() - cpu) / n

    def cpu(self) -> float:
        return time.process_time()


def through_ray(actor, wire, rows: int, decode: bool, n: int, in_flight: int, echo: bool) -> tuple[float, float]:
    """(wall ms per call, the actor's CPU ms per call) for ``n`` calls with ``in_flight`` outstanding."""
    import ray

    cpu0, wall = ray.get(actor.cpu.remote()), time.perf_counter()
    pending = []
    for _ in range(n):
        pending.append(actor.echo.remote(wire) if echo else actor.label.remote(0, rows, True, decode, wire))
        if len(pending) >= in_flight:
            ray.get(pending.pop(0))
    ray.get(pending)
    wall = time.perf_counter() - wall
    return 1e3 * wall / n, 1e3 * (ray.get(actor.cpu.remote()) - cpu0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelers", default="t5")
    ap.add_argument("--rows", type=int, default=32, help="rows per call (the stage: a 32-image shard is one call)")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--concurrency", default="1,2", help="actor max_concurrency values to compare")
    ap.add_argument("--in-flight", default="1,4", help="calls outstanding from the driver")
    args = ap.parse_args()
    import tempfile

    import ray

    from bench_labelers import images, make_labeler
    from pseudolabel.runner import LabelerRun, needs_pixels, to_wire
    from pseudolabel.testing import images_table

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": f"{os.getcwd()}:{os.path.join(os.getcwd(), 'bench')}",
                                       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}})
    imgs = images(args.rows)
    rows = [(f"k{i}", im, f"A test caption number {i}. It has two sentences.") for i, im in enumerate(imgs)]
    print(f"{args.rows} rows a call, {args.calls} calls, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores; ms per call")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.labelers.split(","):
            probe = make_labeler(name, "tiny", None, 1, None)
            if not probe.uses_model:
                print(f"{name}: no model, so no actor (the stage runs it as Ray tasks); skipped", flush=True)
                continue
            model_dir = os.path.join(tmp, name)
            probe.save(probe.seeded_tiny(), model_dir)
            run = LabelerRun(name, {"model": model_dir, "torch_threads": 1}, frozenset())
            pixels = needs_pixels([probe])
            table = images_table(rows)
            if not pixels:  # the stage reads no image column for a pass that does not look at pixels
                table = table.drop_columns(["image"])
            wire = to_wire(table)
            for conc in (int(c) for c in args.concurrency.split(",")):
                actor = ray.remote(CallActor).options(max_concurrency=conc, num_cpus=0).remote(run)
                ray.get(actor.loop.remote(wire, args.rows, pixels, 10))  # warm-up
                wall, cpu = ray.get(actor.loop.remote(wire, args.rows, pixels, args.calls))
                print(f"{name} max_concurrency={conc}: in the actor {wall:.2f} wall / {cpu:.2f} CPU", flush=True)
                for k in (int(x) for x in args.in_flight.split(",")):
                    for echo in (True, False):
                        wall, cpu = through_ray(actor, wire, args.rows, pixels, args.calls, k, echo)
                        what = "no-op call" if echo else "label call"
                        print(f"   {what}, {k} in flight: {wall:.2f} wall, actor CPU {cpu:.2f}", flush=True)
                ray.kill(actor)
    ray.shutdown()


if __name__ == "__main__":
    main()
