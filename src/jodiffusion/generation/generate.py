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

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from jodiffusion import __version__
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.layout import CAPTIONS_FILE, CLASSES_FILE, IMAGES_DIR, MASKS_DIR, SPLITS_DIR, write_classes
from jodiffusion.errors import ConfigError, JoDiffusionError
from jodiffusion.generation import output as store
from jodiffusion.generation.filters import FilterConfig, build_pair_filter
from jodiffusion.generation.prompts import PromptConfig, PromptSource, build_prompt_source
from jodiffusion.utils.io import write_json_atomic
from jodiffusion.utils.ownership import (
    check_path_component,
    check_replaceable,
    foreign_entries,
    read_owner,
    write_owner,
)

log = logging.getLogger("jodiffusion")

FORMATS = ("folder", "webdataset")
IMAGE_FORMATS = ("png", "jpeg")
PRECISIONS = ("auto", "fp32", "bf16")
GENERATION_FORMAT = 1


@dataclass
class GenerateConfig:
    num: int                     # pairs to KEEP
    out: str                     # output folder
    seed: int = 0
    prompts: PromptConfig = field(default_factory=PromptConfig)
    steps: int | None = None     # sampler steps / guidance; None: the model's defaults
    guidance: float | None = None
    batch_size: int = 8
    tau: int = 20                # mask refinement area threshold in pixels; 0 = off
    min_confidence: float = 0.0  # decoded mask pixels below this class probability -> ignore
    format: str = "folder"
    image_format: str = "png"
    jpeg_quality: int = 95
    shard_size: int = 1000       # webdataset: indices per shard (fewer samples when the filter drops some)
    split: str = "train"
    workers: int = 4             # post-processing threads; 0 = in the sampling thread (no overlap)
    precision: str = "auto"      # auto: bf16 autocast on a GPU, fp32 on a CPU
    filters: FilterConfig = field(default_factory=lambda: FilterConfig(enabled=False))
    # give up when this many indices per wanted pair were generated and still too few were kept
    max_tries_per_pair: float = 20.0

    def __post_init__(self):
        if isinstance(self.num, bool) or int(self.num) != self.num or self.num <= 0:
            raise ConfigError(f"num={self.num!r}: the number of pairs must be a positive integer")
        if not str(self.out).strip():
            raise ConfigError("an output folder is required")
        checks = [
            (self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1"),
            (self.seed >= 0, f"--seed {self.seed}: a seed must be an integer >= 0, e.g. --seed 0"),
            (self.format in FORMATS, f"format '{self.format}': choose one of {', '.join(FORMATS)}"),
            (self.image_format in IMAGE_FORMATS,
             f"image format '{self.image_format}': choose one of {', '.join(IMAGE_FORMATS)}"),
            (95 <= self.jpeg_quality <= 100,
             f"jpeg_quality={self.jpeg_quality} must be in 95..100 (lower quality blurs the edges the masks label)"),
            (self.shard_size >= 1, f"shard_size={self.shard_size} must be >= 1"),
            (self.tau >= 0, f"tau={self.tau} must be >= 0 (0 turns refinement off)"),
            (0.0 <= self.min_confidence < 1.0, f"min_confidence={self.min_confidence} must be in [0, 1)"),
            (self.workers >= 0, f"workers={self.workers} must be >= 0"),
            (self.precision in PRECISIONS, f"precision '{self.precision}': choose one of {', '.join(PRECISIONS)}"),
            (self.steps is None or self.steps >= 1, f"steps={self.steps} must be >= 1"),
            (self.guidance is None or 0 <= self.guidance < math.inf,
             f"guidance={self.guidance} must be a finite number >= 0"),
            (self.max_tries_per_pair >= 1, "max_tries_per_pair must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        check_path_component(self.split, "split name")


# --- model identity ------------------------------------------------------------------------------------

def _fingerprint_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jodiffusion" / "fingerprints.json"


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the model folder's files (configs, vocabulary, weights), by relative path.

    Weight files are hashed once per (path, size, mtime) and remembered in ~/.cache/jodiffusion. A text
    encoder that is only a reference (a CLIP model id) enters through jodiffusion.json, not its weights."""
    model_dir = Path(model_dir).resolve()
    cache_path = _fingerprint_cache()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    total, dirty = hashlib.sha256(), False
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        st = path.stat()
        key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
        digest = cache.get(key)
        if digest is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):  # noqa: B023 - f is the loop's own file
                    h.update(chunk)
            digest = h.hexdigest()
            if path.stat().st_size > 1 << 20:
                cache[key], dirty = digest, True
        total.update(f"{path.relative_to(model_dir).as_posix()}\0{digest}\n".encode())
    if dirty:  # forget files that are gone (temporary models), so that the cache does not grow forever
        cache = {k: v for k, v in cache.items() if Path(k.rsplit(":", 2)[0]).is_file()}
        try:
            write_json_atomic(cache_path, cache)
        except OSError:
            pass  # only a cache
    return total.hexdigest()[:24]


def read_model_classes(model_dir: str | Path) -> ClassInfo:
    from jodiffusion.generation.pipeline import MANIFEST

    path = Path(model_dir) / MANIFEST
    try:
        return ClassInfo.from_dict(json.loads(path.read_text())["classes"])
    except (OSError, ValueError, KeyError, TypeError):
        from jodiffusion.errors import CheckpointError

        raise CheckpointError(f"{model_dir} is not a JoDiffusion model folder (no readable {MANIFEST}); pass the "
                              "folder written by `jodiffusion train` (its export/ sub-folder)") from None


# --- distributed -------------------------------------------------------------------------------------

class _Group:
    """Rank, world size and a barrier; one plain process when not launched by torchrun / accelerate."""

    def __init__(self):
        self.state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            # a CPU-only group (gloo) must be asked for: accelerate reads the flag, torchrun does not set it
            flag = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
            cpu = flag or not torch.cuda.is_available()
            self.state = PartialState(cpu=cpu)
        self.rank = self.state.process_index if self.state else 0
        self.world = self.state.num_processes if self.state else 1

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def device(self) -> torch.device:
        if self.state is not None:
            return self.state.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- the output folder -------------------------------------------------------------------------------

def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


COMMAND = "generate"  # the owner marker's name for folders this command writes
# everything ``generate`` writes at the top of its output folder: all that ``--overwrite`` may delete
OUTPUT_ENTRIES = (store.GENERATION_FILE, CLASSES_FILE, IMAGES_DIR, MASKS_DIR, SPLITS_DIR, CAPTIONS_FILE,
                  store.MANIFEST_FILE, store.SUMMARY_FILE, store.CARD_FILE, store.RECORDS_DIR, store.SHARDS_DIR,
                  store.SHARD_LIST)


def _read_meta(out: Path) -> dict | None:
    """generation.json when it is one this command wrote (a dict of this format); else None."""
    try:
        meta = json.loads((out / store.GENERATION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != GENERATION_FORMAT or "model_fingerprint" not in meta:
        return None
    return meta


def _owned(out: Path) -> bool:
    """Whether ``out`` was written by ``generate``: its owner marker, or (folders written before the
    marker existed) a generation.json of this format."""
    return read_owner(out) == COMMAND or (read_owner(out) is None and _read_meta(out) is not None)


def _check_output(out: Path, identity: dict, num: int) -> dict | None:
    """The stored generation.json when ``out`` continues this very generation; None for a new folder
    (also one an interrupted first start left with nothing but its marker and temporary files).
    Raises when ``out`` holds something else."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    if not out.is_dir():
        raise JoDiffusionError(f"{out} exists and is not a folder; choose another --out")
    meta_path = out / store.GENERATION_FILE
    if not meta_path.is_file():
        if read_owner(out) == COMMAND and not foreign_entries(out, ()):
            return None  # killed before its first file was in place: start it again
        raise JoDiffusionError(f"{out} is not empty and holds no {store.GENERATION_FILE}: it is not a generated "
                               "dataset; choose an empty or new folder")
    meta = _read_meta(out)
    if meta is None:
        raise JoDiffusionError(f"{meta_path} is not a generation record of `jodiffusion generate` (unreadable or "
                               "of another format); nothing was changed. Choose an empty or new folder")
    if meta.get("model_fingerprint") != identity["model_fingerprint"]:
        raise JoDiffusionError(
            f"{out} holds samples of another model (fingerprint {meta.get('model_fingerprint')}, this model "
            f"{identity['model_fingerprint']}); nothing was changed. Pass --overwrite to replace them or choose "
            "another --out")
    diffs = _differences(meta.get("config", {}), identity["config"])
    if diffs:
        raise JoDiffusionError(f"{out} holds samples of another generation config ({'; '.join(diffs)}); nothing "
                               "was changed. Rerun with the same settings to continue, --overwrite to replace, "
                               "or choose another --out")
    if num < meta.get("num", 0):
        raise JoDiffusionError(f"{out} was started for {meta['num']} pairs; --num {num} would delete some of them. "
                               f"Pass --num {meta['num']} (or more) to continue, or --overwrite to start again")
    return meta


def _prepare_output(group: _Group, out: Path, identity: dict, cfg: GenerateConfig, classes: ClassInfo,
                    overwrite: bool) -> dict | None:
    """Every rank checks (so that all raise alike); rank 0 then clears / creates the folder.

    ``overwrite`` replaces only a folder this command wrote that holds nothing else (see
    ``jodiffusion.utils.ownership``); anything else is refused, naming what would be lost."""
    meta = None
    if group.rank == 0 or not overwrite:
        try:
            meta = _check_output(out, identity, cfg.num)
        except JoDiffusionError:
            if not overwrite:
                raise
            check_replaceable(out, COMMAND, OUTPUT_ENTRIES, owned=out.is_dir() and _owned(out))
            meta = "replace"
    group.barrier()  # nobody reads the folder while rank 0 changes it
    if group.rank == 0:
        if meta == "replace":
            shutil.rmtree(out)
            meta = None
        out.mkdir(parents=True, exist_ok=True)
        write_owner(out, COMMAND)  # first, so that a kill at any later moment leaves a folder known as ours
        removed = store.remove_temp_files(out)
        if removed:
            log.info("removed %d temporary files of an interrupted run", removed)
        complete = bool(meta and meta.get("complete") and meta.get("num") == cfg.num)
        write_json_atomic(out / store.GENERATION_FILE, {**identity, "num": cfg.num, "complete": complete})
        write_classes(out, classes)
    group.barrier()
    return meta if isinstance(meta, dict) else None


# --- post-processing of a batch (worker threads) -------------------------------------------------------

@dataclass
class _Batch:
    unit: int
    indices: list[int]
    prompts: list
    images: np.ndarray
    masks: np.ndarray
    write: set[int]  # indices whose files must be written (the others are done already)


class _PostProcessor:
    def __init__(self, cfg: GenerateConfig, classes: ClassInfo, out: Path, identity: dict, pair_filter):
        self.cfg, self.classes, self.out, self.pair_filter = cfg, classes, out, pair_filter
        self.fingerprint = identity["model_fingerprint"]

    def _filter(self, images, masks, prompt_classes):
        if self.pair_filter is None:
            return [None] * len(masks)
        if hasattr(self.pair_filter, "filter_batch"):
            return self.pair_filter.filter_batch(list(images), list(masks), prompt_classes)
        return [self.pair_filter(i, m, c) for i, m, c in zip(images, masks, prompt_classes, strict=True)]

    def __call__(self, batch: _Batch) -> list[tuple[dict, bytes | None, bytes | None]]:
        from jodiffusion.diffusion.sampling import sample_seed
        from jodiffusion.generation.refine import refine_mask

        cfg, names = self.cfg, self.classes.names
        masks, stats = [], []
        for mask in batch.masks:
            if cfg.tau > 0:
                mask, st = refine_mask(mask, tau=cfg.tau, ignore_index=self.classes.ignore_index,
                                       background_id=self.classes.background)
                stats.append(st.to_dict())
            else:
                stats.append(None)
            masks.append(mask)
        results = self._filter(batch.images, masks, [set(p.classes) for p in batch.prompts])
        out = []
        for index, prompt, image, mask, st, res in zip(batch.indices, batch.prompts, batch.images, masks, stats,
                                                       results, strict=True):
            stem = store.stem_of(index)
            keep = res is None or bool(res.keep)
            if res is not None and keep:
                mask = np.asarray(res.mask, dtype=np.uint8)
            record = {"index": index, "stem": stem, "kept": keep, "reason": None if keep else res.reason,
                      "prompt": prompt.text, "prompt_source": prompt.source,
                      "prompt_classes": [names[c] for c in prompt.classes], "seed": cfg.seed,
                      "sample_seed": sample_seed(cfg.seed, index), "model": self.fingerprint, "refine": st,
                      "scores": _plain(res.scores) if res is not None else None}
            if not keep:
                out.append((record, None, None))
                continue
            counts = np.bincount(mask.ravel(), minlength=256)
            record["class_pixels"] = {names[k]: int(counts[k]) for k in range(len(names)) if counts[k]}
            record["ignore_pixels"] = int(counts[self.classes.ignore_index])
            image_bytes = store.encode_image(image, cfg.image_format, cfg.jpeg_quality)
            mask_bytes = store.encode_mask(mask, self.classes)
            if cfg.format == "folder":
                img_rel, mask_rel = store.folder_paths(stem, cfg.split, cfg.image_format)
                record["files"] = {"image": img_rel, "mask": mask_rel}
                if index in batch.write:  # image, then mask; the record (the "done" mark) comes last
                    store.write_bytes_atomic(self.out / img_rel, image_bytes)
                    store.write_bytes_atomic(self.out / mask_rel, mask_bytes)
                image_bytes = mask_bytes = None
            else:
                record["files"] = {"shard": store.shard_name(index // cfg.shard_size)}
            out.append((record, image_bytes, mask_bytes))
        return out


def _plain(value):
    """JSON-safe copy of filter scores (numpy scalars -> Python numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# --- the generation loop -------------------------------------------------------------------------------

class _Runner:
    def __init__(self, pipe, cfg: GenerateConfig, source: PromptSource, out: Path, group: _Group,
                 post: _PostProcessor, sampler, autocast):
        self.pipe, self.cfg, self.source, self.out, self.group, self.post = pipe, cfg, source, out, group, post
        self.sampler, self.autocast = sampler, autocast
        self.unit_size = cfg.shard_size if cfg.format == "webdataset" else cfg.batch_size
        self.journal = store.Journal(out, group.rank)
        self.shards = store.ShardWriter(out) if cfg.format == "webdataset" else None
        self.pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="jodiffusion-write") if cfg.workers else None
        self.pending: deque[tuple[_Batch, Future | list]] = deque()
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
        from jodiffusion.diffusion.sampling import sample_seed

        prompts = [self.source(i) for i in indices]
        seeds = [sample_seed(self.cfg.seed, i) for i in indices]
        lat = self.pipe.generate_latents([p.text for p in prompts], seeds, self.sampler, self.autocast)
        images, masks = self.pipe.decode(lat["img"], lat["mask"], self.cfg.min_confidence)
        batch = _Batch(unit, indices, prompts, images, masks, missing & set(indices))
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
    from jodiffusion.generation.pipeline import JoDiffusionPipeline

    started = time.perf_counter()
    model_dir, out = Path(model_dir), Path(cfg.out).expanduser()
    group = _Group()
    classes = read_model_classes(model_dir)
    source = build_prompt_source(cfg.prompts, classes, cfg.seed, model_dir)  # validates before the model loads
    dev = torch.device(device) if device else group.device()
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if dev.type == "cuda" else "fp32")
    filters_id = asdict(cfg.filters) if cfg.filters.enabled else None
    if pair_filter is not None:
        filters_id = {"custom": type(pair_filter).__name__, **getattr(pair_filter, "identity", {})}
    pipe = JoDiffusionPipeline.from_pretrained(model_dir, device=dev)  # a broken model changes nothing
    model_sampler = json.loads((model_dir / "jodiffusion.json").read_text()).get("sampler", {})
    from jodiffusion.diffusion.sampling import SamplerConfig

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
    meta = _prepare_output(group, out, identity, cfg, classes, overwrite)
    if meta and meta.get("complete") and meta.get("num") == cfg.num and (out / store.SUMMARY_FILE).is_file():
        log.info("%s already holds the %d pairs of this generation", out, cfg.num)
        return json.loads((out / store.SUMMARY_FILE).read_text())

    autocast = torch.bfloat16 if precision == "bf16" else None
    runner = _Runner(pipe, cfg, source, out, group, _PostProcessor(cfg, classes, out, identity, pair_filter),
                     sampler, autocast)
    align = cfg.shard_size if cfg.format == "webdataset" else 1  # a shard never straddles two rounds
    start, end = 0, math.ceil(cfg.num / align) * align
    bar = tqdm(total=0, desc=f"generate ({group.world} proc)" if group.world > 1 else "generate", unit="pair",
               disable=not progress or group.rank != 0, dynamic_ncols=True)
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
        from jodiffusion.generation.card import finish

        finish(out, records, cfg, identity, classes, source, pair_filter, seconds=seconds,
               generated=sum(1 for i in records if i < end and i not in first_done), world=group.world)
    group.barrier()
    summary = json.loads((out / store.SUMMARY_FILE).read_text())
    if group.rank != 0:  # the shared summary counts rank 0's own work; say what this process did
        summary = {**summary, "rank": group.rank, "generated_here": runner.generated}
    return summary
