"""`smls embed --ray`: the same blocks as a local run, embedded by a pool of Ray actors, each holding the model once.

The pipeline is Ray Data's: the blocks (a few numbers each, never the rows) become a
dataset, `map_batches` hands them one at a time to an `ActorPoolStrategy` pool of smls
encoders, and each actor reads its block's rows itself, embeds them and writes the block's
file (so the inputs and the output folder must be at the same path on every node: a
shared file system). Ray restarts a killed actor and retries its block (Ray Data's
default for actor pools), and a retried block is written again under the same name, so
the output holds every row once. Ray is an extra (requirements-ray.txt): imported here
only.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from smls.config import Settings, cpu_count
from smls.corpus import job, output
from smls.corpus.sources import Block, CorpusError
from smls.errors import SmlsError
from smls.library import Library

FIELDS = ("name", "rows", "bad", "truncated", "error", "started", "ended", "actor")  # a Summary as a row
_PASSED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
STARTUP_S = 600  # how long the actors may take to start (a cluster may have to add nodes for them)


def passed_env() -> dict[str, str]:
    """What an actor's process needs of the driver's environment: the settings and the offline switches."""
    return {k: v for k, v in os.environ.items() if k.startswith("SMLS_") or k in _PASSED}


class EmbedActor:
    """One model loaded once in a Ray actor; turns blocks (a batch of their fields) into written files and their summaries."""

    def __init__(self, env: dict[str, str], cwd: str, options: dict[str, Any], cores: int) -> None:
        os.environ.update(env)
        if Path(cwd).is_dir():  # relative paths in the settings mean what they mean to the driver
            os.chdir(cwd)
        self.options = job.Options.from_dict(options)
        self.embedder = job.BlockEmbedder(Settings.from_env(), self.options, cores)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        """Embed each block of the batch; one summary row per block."""
        done: list[job.Summary] = []
        for i in range(len(batch["kind"])):
            block = Block(str(batch["kind"][i]), str(batch["source"][i]), *(int(batch[k][i]) for k in ("number", "start", "stop", "offset")))  # type: ignore[arg-type]
            if not self.options.out:
                done.append(self.embedder.cache_document(block.source))
                continue
            started = time.time()
            try:
                done.append(replace(self.embedder.embed(block), started=started, ended=time.time(), actor=self.name))
            except SmlsError as exc:  # told to the driver as data: an exception loses its type on the way
                done.append(job.Summary(block.name, 0, 0, 0, exc.message))
        return {key: [getattr(s, key) for s in done] for key in FIELDS}


def connect(address: str) -> None:
    """Join the cluster at `address`; 'auto': the running cluster, else a new one on this machine's cores."""
    import ray

    # smls reaches nothing but the package index: Ray's usage reporting stays off unless the
    # user turns it on. (Off, Ray Data also starts no usage-collecting actor: a process of
    # its own that took 1.5 CPU-s to start beside the first blocks.)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": passed_env()}, "log_to_driver": True, "configure_logging": False}
    if address == "auto" and not os.environ.get("RAY_ADDRESS"):
        try:
            ray.init(address="auto", **kwargs)
        except ConnectionError:  # no cluster running: one on this machine
            ray.init(num_cpus=cpu_count(), **kwargs)
        return
    ray.init(address=None if address == "auto" else address, **kwargs)


def _pool(blocks: Sequence[Block], options: job.Options, actors: int | None, cores: int | None, progress: bool) -> Any:
    """The dataset of block summaries, computed by an actor pool as it is read."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    if cores is None:
        # One actor per node, on all its cores, where the nodes are alike: one process running
        # its model on two streams did 654 rows/s where two one-stream actors on the same two
        # cores did 575 (bench/embed.py's corpus), each actor paying Ray's threads and its own model.
        cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
        cores = max(1, min((c for c in cpus if c > 0), default=1))
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1)) // cores)
    actors = min(actors, len(blocks))
    free = int(ray.available_resources().get("CPU", 0))
    if actors * cores > free:  # an autoscaling cluster may add nodes for them; a fixed one never will
        print(f"waiting up to {STARTUP_S} s for {actors * cores} CPUs ({actors} actors x {cores}); the cluster has {free} free", file=sys.stderr)
    items = [b.as_dict() for b in blocks]
    context = DataContext.get_current()  # (a dataset takes a copy of it when made)
    context.enable_progress_bars = progress
    # Hand out no block before every actor is up (loading its model takes seconds): otherwise
    # the first actor ready takes two blocks, and a job of two blocks runs on one actor.
    context.wait_for_min_actors_s = STARTUP_S
    # And to the least busy actor, not the one on the node that holds the block's few numbers
    # (the rows are read by the actor, where it runs): else the head's actor takes two.
    context.execution_options.actor_locality_enabled = False
    data = ray.data.from_items(items, override_num_blocks=len(items))
    return data.map_batches(
        EmbedActor,
        fn_constructor_kwargs={"env": passed_env(), "cwd": os.getcwd(), "options": options.as_dict(), "cores": cores},
        batch_size=1,
        # A block running and one waiting per actor: with one, an actor sat idle 0.1-0.2 s
        # between blocks of 3 s while the driver handed it the next (5%). No more than one
        # waits, so no actor has more than one block left when another runs out of work.
        compute=ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2),
        num_cpus=cores,
    )


def _collect(dataset: Any, stop_on_error: bool) -> list[job.Summary]:
    """Run the pipeline; the blocks' summaries (a block's error, such as a bad row that stops the run, raised here when `stop_on_error`)."""
    from ray.exceptions import GetTimeoutError

    summaries = []
    try:
        for r in dataset.iter_rows():
            summary = job.Summary(str(r["name"]), int(r["rows"]), int(r["bad"]), int(r["truncated"]), str(r["error"]), float(r["started"]), float(r["ended"]), str(r["actor"]))
            if summary.error and stop_on_error:
                raise CorpusError(summary.error)  # (the caller's ray.shutdown stops the other actors)
            summaries.append(summary)
    except GetTimeoutError:  # (raised by the pool's start: see STARTUP_S)
        raise CorpusError(f"the actors did not all start within {STARTUP_S} s: ask for fewer (--actors, --cpus-per-actor) or add nodes") from None
    return summaries


def run_on_ray(
    settings: Settings, library: Library, address: str, inputs: Sequence[str], blocks: Sequence[Block], options: job.Options, actors: int | None, cores: int | None, progress: bool
) -> list[job.Summary]:
    """The run on a Ray cluster: every block not yet in the output folder, by a pool of actors."""
    import ray

    # Every node sees the same paths only if they are absolute (and shared).
    blocks = [b if b.kind == "document" else replace(b, source=str(Path(b.source).resolve())) for b in blocks]
    options = replace(options, out=str(Path(options.out).resolve()))
    out = Path(options.out)
    todo = output.pending(out, job.manifest(settings, options, inputs, blocks, library), blocks)
    started, began = time.perf_counter(), time.time()
    summaries: list[job.Summary] = []
    if todo:
        connect(address)
        try:
            summaries = _collect(_pool(todo, options, actors, cores, progress), stop_on_error=True)
        finally:
            ray.shutdown()
    output.remove_leftovers(out)
    missing = {b.name for b in todo} - {s.name for s in summaries}
    if missing:
        raise CorpusError(f"{len(missing)} blocks were not written (e.g. {sorted(missing)[0]}); run the same command again to finish them")
    print(job.report(out, summaries, len(blocks) - len(todo), time.perf_counter() - started, began))
    return summaries


def into_store_on_ray(
    settings: Settings, library: Library, address: str, doc_ids: list[str] | None, options: job.Options, actors: int | None, cores: int | None
) -> int:
    """Document vectors into the shared store by a pool of actors, one document at a time; the number that failed."""
    import ray

    ids = doc_ids if doc_ids is not None else [entry.doc_id for entry in library.listing()]
    if not ids:
        print(f"no documents in {settings.data_dir}", file=sys.stderr)
        return 0
    blocks = [Block("document", doc_id, 0, 0, 0) for doc_id in ids]
    connect(address)
    try:
        summaries = _collect(_pool(blocks, options, actors, cores, progress=False), stop_on_error=False)
    finally:
        ray.shutdown()
    for s in summaries:
        if s.error:
            print(f"{s.name}: error: {s.error}", file=sys.stderr)
        else:
            print(f"{s.name}: {s.rows} sentences cached")
    return sum(1 for s in summaries if s.error)
