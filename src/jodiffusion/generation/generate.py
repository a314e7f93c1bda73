"""``jodiffusion generate``: a synthetic segmentation dataset of N (image, mask) pairs, at scale.

Determinism. Sample ``i`` gets prompt ``prompts(seed, i)`` and noise ``sample_seed(seed, i)``, so it is a
function of (seed, i, model, config). Indices are cut into units (``batch_size`` indices for folders,
``shard_size`` for webdataset shards); unit ``u`` is done by rank ``u % world`` in batches taken inside
the unit. A batch therefore holds the same indices on 1 or many processes and after a restart (a
partly done unit is sampled again whole and only its missing pairs written), so outputs are identical
even where kernels are not batch-invariant (GPUs); across *batch sizes* they are identical where kernels
are batch-invariant (checked on CPU).

Filtering: the output holds the first N *kept* indices in index order. Generation runs in rounds: round
0 covers indices [0, N); when fewer than N of the indices generated so far were kept, the next round
covers enough further indices for the measured keep rate (plus 20%). After each round every process
waits for the others and counts the kept records on disk, so all agree on the next round. Whatever lies
beyond the N-th kept index when the last round ends is removed by the final merge; the result does not
depend on how far the rounds went, only on the (deterministic) keep decisions.

Speed: the main thread samples and decodes; refinement, the quality filter, image encoding and file
writing of a batch run in a thread pool (PIL's encoders and scipy release the GIL) while the next batch
is sampled. At most ``2 * workers`` batches wait, which bounds memory.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import torch

from jodiffusion import __version__
from jodiffusion.diffusion.sampling import SamplerConfig
from jodiffusion.errors import JoDiffusionError
from jodiffusion.generation import output as store
from jodiffusion.generation.card import finish
from jodiffusion.generation.config import GENERATION_FORMAT, GenerateConfig
from jodiffusion.generation.filters import build_pair_filter
from jodiffusion.generation.model_identity import model_fingerprint, read_model_classes
from jodiffusion.generation.output_folder import RULES as OUTPUT_RULES
from jodiffusion.generation.output_folder import prepare_output
from jodiffusion.generation.postprocess import Batch, PostProcessor
from jodiffusion.generation.process_group import ProcessGroup
from jodiffusion.generation.prompts import PromptSource, build_prompt_source
from jodiffusion.pipelines.batching import generate_batches
from jodiffusion.pipelines.pipeline import JoDiffusionPipeline
from jodiffusion.utils.output_folder import output_folder
from jodiffusion.utils.precision import autocast_dtype
from jodiffusion.utils.progress import progress_bar

log = logging.getLogger("jodiffusion")

# --- the generation loop -------------------------------------------------------------------------------

class _Runner:
    def __init__(self, pipe, cfg: GenerateConfig, source: PromptSource, out: Path, group: ProcessGroup,
                 post: PostProcessor, sampler, precision: str):
        self.pipe, self.cfg, self.source, self.out, self.group, self.post = pipe, cfg, source, out, group, post
        self.sampler, self.precision = sampler, precision
        self.unit_size = cfg.shard_size if cfg.format == "webdataset" else cfg.batch_size
        self.journal = store.Journal(out, group.rank)
        self.shards = store.ShardWriter(out) if cfg.format == "webdataset" else None
        self.pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="jodiffusion-write") if cfg.workers else None
        self.pending: deque[tuple[Batch, Future | list]] = deque()
        self.generated = 0
        self.kept = 0

    def done_indices(self, records: dict[int, dict]) -> set[int]:
        done = set()
        for i, r in records.items():
            if not r["kept"] or (self.cfg.format == "folder" and store.files_present(self.out, r)):
                done.add(i)
            elif self.cfg.format == "webdataset" and (self.out / r["files"]["shard"]).is_file():
                done.add(i)
        return done

    def run_round(self, start: int, end: int, done: set[int], bar) -> None:
        u0, u1 = start // self.unit_size, (end - 1) // self.unit_size
        for unit in range(u0, u1 + 1):
            if unit % self.group.world != self.group.rank:
                continue
            lo, hi = max(unit * self.unit_size, start), min((unit + 1) * self.unit_size, end)
            missing = {i for i in range(lo, hi) if i not in done}
            if not missing:
                continue
            if self.shards is not None:  # a shard is rewritten whole
                missing = set(range(lo, hi))
            for first in range(lo, hi, self.cfg.batch_size):
                indices = list(range(first, min(first + self.cfg.batch_size, hi)))
                self._sample(unit, indices, missing)
                self._drain(bar, keep=2 * max(self.cfg.workers, 1))
        self._drain(bar, keep=0)
        self._close_shard()

    def _sample(self, unit: int, indices: list[int], missing: set[int]) -> None:
        prompts = [self.source(i) for i in indices]  # consecutive indices: one batch from indices[0] on
        # refinement stays with the post-processing threads, off the sampling thread
        pairs = generate_batches(self.pipe, [p.text for p in prompts], len(indices), seed=self.cfg.seed,
                                 start_index=indices[0], sampler=self.sampler, min_confidence=self.cfg.min_confidence,
                                 precision=self.precision)
        batch = Batch(unit, indices, prompts, pairs.images, pairs.masks, missing & set(indices))
        job = self.pool.submit(self.post, batch) if self.pool else self.post(batch)
        self.pending.append((batch, job))

    def _drain(self, bar, keep: int) -> None:
        while len(self.pending) > keep:
            batch, job = self.pending.popleft()
            results = job.result() if isinstance(job, Future) else job
            if self.shards is None:
                records = [r for r, _, _ in results if r["index"] in batch.write]
                self.journal.append(records)
            else:
                if self.shards.unit != batch.unit:
                    self._close_shard()
                    self.shards.open(batch.unit)
                for record, image, mask in results:
                    self.shards.add(record, store.image_suffix(self.cfg.image_format), image, mask)
            n_kept = sum(r["kept"] for r, _, _ in results)
            self.generated += len(results)
            self.kept += n_kept
            if bar is not None:
                bar.update(len(results))
                bar.set_postfix(kept=self.kept, dropped=self.generated - self.kept, refresh=False)

    def _close_shard(self) -> None:
        if self.shards is not None:
            self.journal.append(self.shards.close())

    def close(self) -> None:
        self.journal.close()
        if self.pool:
            self.pool.shutdown()


def _next_end(end: int, kept: int, num: int, align: int) -> int:
    rate = max(kept / max(end, 1), 0.05)
    extra = math.ceil((num - kept) / rate * 1.2)
    return math.ceil((end + max(extra, 1)) / align) * align


def generate_dataset(model_dir: str | Path, cfg: GenerateConfig, *, device: str | None = None,
                     overwrite: bool = False, progress: bool = True, pair_filter=None) -> dict:
    """Generate ``cfg.num`` kept pairs into ``cfg.out`` (see the module doc); returns the summary.

    Run it in several processes (``torchrun --nproc_per_node K -m jodiffusion.cli.main generate ...``) to
    share the work; rerun it after an interruption to finish. ``pair_filter`` replaces the filter that
    ``cfg.filters`` describes (an object with ``__call__(image, mask, prompt_classes) -> FilterResult``)."""
    started = time.perf_counter()
    model_dir, out = Path(model_dir), Path(cfg.out).expanduser()
    group = ProcessGroup()
    classes = read_model_classes(model_dir)
    source = build_prompt_source(cfg.prompts, classes, cfg.seed, model_dir)  # validates before the model loads
    dev = torch.device(device) if device else group.device()
    precision = "bf16" if autocast_dtype(cfg.precision, dev) is not None else "fp32"
    filters_id = asdict(cfg.filters) if cfg.filters.enabled else None
    if pair_filter is not None:
        filters_id = {"custom": type(pair_filter).__name__, **getattr(pair_filter, "identity", {})}
    pipe = JoDiffusionPipeline.from_pretrained(model_dir, device=dev)  # a broken model changes nothing
    model_sampler = json.loads((model_dir / "jodiffusion.json").read_text()).get("sampler", {})

    sampler = SamplerConfig(**model_sampler).override(cfg.steps, cfg.guidance)
    identity = {"format": GENERATION_FORMAT, "jodiffusion_version": __version__,
                "model_fingerprint": model_fingerprint(model_dir), "model_dir": str(model_dir.resolve()),
                "config": {"seed": cfg.seed, "prompts": source.identity(), "sampler": asdict(sampler),
                           "tau": cfg.tau, "min_confidence": cfg.min_confidence, "format": cfg.format,
                           "image_format": cfg.image_format,
                           "jpeg_quality": cfg.jpeg_quality if cfg.image_format == "jpeg" else None,
                           "shard_size": cfg.shard_size if cfg.format == "webdataset" else None,
                           "split": cfg.split, "precision": precision, "filters": filters_id}}
    if pair_filter is None and cfg.filters.enabled:  # nor a broken --consistency-segmenter
        pair_filter = build_pair_filter(cfg.filters, classes, dev)
        pair_filter.padding = pipe.padding  # the padding is ignore by design, not a pair left unlabelled
    # one writer at a time: a second run into this folder is refused, naming the first
    # (prepared below, by the same rules: every rank reads whether the folder holds this same generation)
    with output_folder(out, OUTPUT_RULES, enabled=group.rank == 0, world=group.world, take=lambda: None):
        meta = prepare_output(group, out, identity, cfg, classes, overwrite)
        if meta and meta.get("complete") and meta.get("num") == cfg.num and (out / store.SUMMARY_FILE).is_file():
            log.info("%s already holds the %d pairs of this generation", out, cfg.num)
            return json.loads((out / store.SUMMARY_FILE).read_text())

        runner = _Runner(pipe, cfg, source, out, group, PostProcessor(cfg, classes, out, identity, pair_filter),
                         sampler, precision)
        align = cfg.shard_size if cfg.format == "webdataset" else 1  # a shard never straddles two rounds
        start, end = 0, math.ceil(cfg.num / align) * align
        desc = f"generate ({group.world} proc)" if group.world > 1 else "generate"
        bar = progress_bar(total=0, desc=desc, unit="pair", disable=not progress or group.rank != 0,
                           dynamic_ncols=True)
        first_done: set[int] | None = None
        try:
            while True:
                records = store.read_records(out)
                done = runner.done_indices(records)
                first_done = done if first_done is None else first_done
                mine = [i for i in range(start, end) if (i // runner.unit_size) % group.world == group.rank]
                bar.total += len(mine) - sum(i in done for i in mine)
                bar.refresh()
                runner.run_round(start, end, done, bar)
                group.barrier()  # every journal of this round is on disk
                records = store.read_records(out)
                kept = sum(1 for i, r in records.items() if i < end and r["kept"])
                if kept >= cfg.num:
                    break
                if end >= cfg.max_tries_per_pair * cfg.num:
                    reasons = Counter(r["reason"] for r in records.values() if not r["kept"])
                    raise JoDiffusionError(
                        f"only {kept} of {cfg.num} pairs passed the quality filter after {end} samples (dropped: "
                        f"{dict(reasons)}); loosen the filter settings. What was generated is kept: rerun to continue")
                start, end = end, _next_end(end, kept, cfg.num, align)
                log.info("%d of %d pairs kept so far; generating indices up to %d", kept, cfg.num, end)
        finally:
            bar.close()
            runner.close()
        seconds = time.perf_counter() - started
        if group.rank == 0:
            finish(out, records, cfg, identity, classes, source, pair_filter, seconds=seconds,
                   generated=sum(1 for i in records if i < end and i not in first_done), world=group.world)
        group.barrier()
        summary = json.loads((out / store.SUMMARY_FILE).read_text())
        if group.rank != 0:  # the shared summary counts rank 0's own work; say what this process did
            summary = {**summary, "rank": group.rank, "generated_here": runner.generated}
        return summary
