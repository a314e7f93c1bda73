"""Train a segmenter on real, synthetic or mixed pairs and score it on the REAL validation split.

This is how generated data is judged: a segmenter trained on synthetic (or real + synthetic) pairs
must do well on real images (mIoU). Training follows the other stages: accelerate, a run folder with
the resolved config, numbered checkpoints and ``--resume latest``, ``metrics.jsonl``; the result is
``<output_dir>/segmenter`` (``config.json`` + ``model.safetensors``) and ``eval.json``.

Every training pair is fitted to one *training frame* (the size of the first training image, its
short side scaled to ``input_size`` when set), then scale-jittered, cropped and flipped with a
generator seeded per drawn sample, so batches do not depend on worker or process counts and a
resumed run sees the same data. Evaluation resizes each image to the frame, resizes the logits back
to the mask's size (bilinear) and takes the argmax: scores are at full resolution.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from jodiffusion.config.loader import save_run_config
from jodiffusion.data.base import SegmentationDataset
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.config import DataConfig
from jodiffusion.data.latent_cache import resize_pair
from jodiffusion.engine.checkpoint import CheckpointManager
from jodiffusion.engine.config import TrainConfig
from jodiffusion.engine.runtime import (
    MetricLogger,
    infinite_batches,
    make_accelerator,
    make_lr_scheduler,
    make_optimizer,
    optimizer_step,
    prepare_run_dir,
)
from jodiffusion.errors import ConfigError, DatasetError
from jodiffusion.metrics import ConfusionMatrix
from jodiffusion.segmentation.models import (
    RANDOM_INIT,
    SEGMENTERS,
    SegmenterConfig,
    build_segmenter,
    load_segmenter,
    num_parameters,
    save_segmenter,
)
from jodiffusion.utils.io import write_json_atomic

log = logging.getLogger("jodiffusion")

MODEL_DIR = "segmenter"  # the exported model inside a run folder
MIX_MODES = ("real", "synthetic", "real+synthetic")


@dataclass
class SegRunConfig:
    # The REAL dataset: its train split is the "real" training data, its val split always scores.
    data: DataConfig = field(default_factory=DataConfig)
    # A generated dataset in the generic layout (images/<split>/, masks/<split>/, classes.json).
    synthetic: str | None = None
    synthetic_split: str = "train"
    mix: str = "real"               # "real", "synthetic" or "real+synthetic"
    synthetic_ratio: float = 0.5    # real+synthetic: fraction of every batch drawn from synthetic data
    model: str = "small"            # a name in segmentation.models.SEGMENTERS
    backbone_weights: str | None = None  # local torchvision ResNet state dict (.pth / .safetensors)
    aux_loss: bool = False          # deeplabv3 only: auxiliary FCN head on layer3
    aux_weight: float = 0.4
    input_size: int = 0             # short side of the training frame; 0: the images' own size
    crop_size: int = 0              # square random training crop; 0: the whole frame
    min_scale: float = 0.75         # random rescaling of each training pair before the crop
    max_scale: float = 1.25
    hflip: bool = True
    cache: bool = True              # hold the frame-sized training pairs in memory
    eval_batch_size: int = 8
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, weight_decay=1e-4))
    output_dir: str = "runs/seg"

    def __post_init__(self):
        if self.mix not in MIX_MODES:
            raise ValueError(f"mix='{self.mix}'; choose one of {', '.join(MIX_MODES)}")
        if self.mix != "real" and not self.synthetic:
            raise ValueError(f"mix='{self.mix}' needs synthetic=<folder of generated pairs>")
        if not 0.0 < self.synthetic_ratio < 1.0:
            raise ValueError(f"synthetic_ratio={self.synthetic_ratio} must lie strictly between 0 and 1")
        if self.model not in SEGMENTERS:
            raise ValueError(f"model='{self.model}' is not a segmenter; choose one of {', '.join(SEGMENTERS)}")
        if self.input_size < 0 or self.crop_size < 0:
            raise ValueError("input_size and crop_size must be >= 0 (0: use the images' own size)")
        if not 0.0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale} and {self.max_scale}")
        if self.eval_batch_size < 1 or self.aux_weight < 0:
            raise ValueError("eval_batch_size must be >= 1 and aux_weight >= 0")


# --- data -------------------------------------------------------------------------------------------

def _build_split(data: DataConfig, split: str, progress: bool = True,
                 same_classes_as: ClassInfo | None = None) -> SegmentationDataset:
    from jodiffusion.data.registry import build_dataset
    from jodiffusion.data.validate import ensure_valid

    dataset = build_dataset(data, split)
    if same_classes_as is not None:  # before validation: a wrong label space is the clearer error
        check_same_classes(same_classes_as, dataset.classes, str(data.root))
    ensure_valid(dataset, progress=progress)
    return dataset


def synthetic_data_config(folder: str, split: str = "train") -> DataConfig:
    return DataConfig(name="folder", root=folder, train_split=split)


def check_same_classes(real: ClassInfo, synthetic: ClassInfo, where: str) -> None:
    if tuple(real.names) != tuple(synthetic.names):
        raise DatasetError(f"the class names of the synthetic set {where} do not match the real dataset's:\n"
                           f"  synthetic: {', '.join(synthetic.names)}\n  real:      {', '.join(real.names)}\n"
                           "generate the set from a model trained on this dataset, or fix its classes.json")


def frame_size(dataset: SegmentationDataset, input_size: int) -> tuple[int, int]:
    """(H, W) of the training frame: the first image's size, short side scaled to ``input_size``."""
    h, w = dataset.load_mask(0).shape[:2]
    if not input_size:
        return h, w
    s = input_size / min(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def augment_pair(image: np.ndarray, mask: np.ndarray, out_hw: tuple[int, int], scale_range: tuple[float, float],
                 hflip: bool, ignore_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random rescale, random crop to ``out_hw`` (padding: black image, ignored mask) and flip."""
    h, w = mask.shape
    s = rng.uniform(*scale_range)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.Resampling.NEAREST))
    oh, ow = out_hw
    if nh < oh or nw < ow:
        ph, pw = max(nh, oh), max(nw, ow)
        padded_image = np.zeros((ph, pw, 3), np.uint8)
        padded_mask = np.full((ph, pw), ignore_index, np.uint8)
        padded_image[:nh, :nw], padded_mask[:nh, :nw] = image, mask
        image, mask, nh, nw = padded_image, padded_mask, ph, pw
    top, left = int(rng.integers(0, nh - oh + 1)), int(rng.integers(0, nw - ow + 1))
    image, mask = image[top:top + oh, left:left + ow], mask[top:top + oh, left:left + ow]
    if hflip and rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return np.array(image, order="C"), np.array(mask, order="C")  # copies: the cache stays untouched


class TrainPairs(torch.utils.data.Dataset):
    """The training pairs of one or more sources behind one index space.

    Key ``(index, seed)`` -> ``{"image": (3, h, w) uint8, "mask": (h, w) long, "synthetic": bool}``: the
    pair is fitted to ``frame`` (resize to cover, centre crop), then augmented by a generator seeded
    with ``seed``. ``sources``: ``(dataset, is_synthetic)``; masks are mapped to ``ignore_index``.
    """

    def __init__(self, sources: list[tuple[SegmentationDataset, bool]], frame: tuple[int, int],
                 out_size: tuple[int, int], scale_range: tuple[float, float] = (1.0, 1.0), hflip: bool = False,
                 ignore_index: int = 255, cache: bool = True, threads: int = 4):
        self.sources = sources
        self.frame, self.out_size, self.scale_range = frame, out_size, scale_range
        self.hflip, self.ignore_index = hflip, ignore_index
        self.offsets = np.cumsum([0] + [len(ds) for ds, _ in sources])
        self._cache = None
        if cache:
            with ThreadPoolExecutor(threads) as pool:
                self._cache = list(pool.map(self._fitted, range(len(self))))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (source number, index within that source)."""
        s = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return s, int(index - self.offsets[s])

    def _fitted(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        s, i = self.locate(index)
        dataset = self.sources[s][0]
        image, mask = resize_pair(dataset.load_image(i), dataset.load_mask(i), self.frame)
        own_ignore = dataset.classes.ignore_index
        if own_ignore != self.ignore_index:
            mask = np.where(mask == own_ignore, self.ignore_index, mask).astype(np.uint8)
        return image, mask

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        image, mask = self._cache[index] if self._cache is not None else self._fitted(index)
        image, mask = augment_pair(image, mask, self.out_size, self.scale_range, self.hflip, self.ignore_index,
                                   np.random.default_rng(seed))
        return {"image": torch.from_numpy(image).permute(2, 0, 1), "mask": torch.from_numpy(mask).long(),
                "synthetic": self.sources[self.locate(index)[0]][1]}


class MixedBatchSampler:
    """Batches of ``(index, seed)`` keys holding exactly ``per_batch[s]`` samples of each source ``s``.

    Each source is an endless stream of shuffles (one per pass, seeded by seed, source and pass), read
    ``per_batch[s]`` items per batch, so batch ``b`` of epoch ``e`` depends only on (seed, e, b): a resumed
    run sees the same batches. An epoch is one pass over the source that takes the most batches to go
    through. Indices of source ``s`` are offset by the sizes of the sources before it.
    """

    drop_last = True  # every batch is full

    def __init__(self, sizes: list[int], per_batch: list[int], seed: int = 0, min_batches: int = 1):
        if len(sizes) != len(per_batch) or min(sizes) < 1 or min(per_batch) < 0 or sum(per_batch) < 1:
            raise ValueError(f"bad sources: sizes {sizes}, per batch {per_batch}")
        self.sizes, self.per_batch, self.seed = list(sizes), list(per_batch), int(seed)
        self.offsets = np.cumsum([0] + self.sizes)
        self.batch_size = sum(per_batch)
        # min_batches: the number of processes, so that each gets at least one batch per epoch
        self.batches_per_epoch = max([min_batches] + [-(-n // k) for n, k in zip(sizes, per_batch, strict=True) if k])
        self.epoch = 0
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    @property
    def sampler(self):  # accelerate's multi-process wrapper sets the epoch through `.sampler.set_epoch`
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _perm(self, source: int, rnd: int) -> np.ndarray:
        key = (source, rnd)
        if key not in self._perms:
            if len(self._perms) > 8:
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.seed, source, rnd]).permutation(self.sizes[source])
        return self._perms[key]

    def batch(self, number: int) -> list[tuple[int, int]]:
        """The ``number``-th batch since the start of training (epoch * batches_per_epoch + batch)."""
        keys = []
        for s, (n, k) in enumerate(zip(self.sizes, self.per_batch, strict=True)):
            for j in range(number * k, (number + 1) * k):  # position j in source s's stream
                index = int(self.offsets[s] + self._perm(s, j // n)[j % n])
                seed = int(np.random.SeedSequence([self.seed, s, j]).generate_state(1)[0])
                keys.append((index, seed))
        return keys

    def __iter__(self):
        start = self.epoch * self.batches_per_epoch
        for b in range(self.batches_per_epoch):
            yield self.batch(start + b)


def batch_split(cfg: SegRunConfig) -> tuple[int, int]:
    """(real, synthetic) samples in every batch."""
    b = cfg.train.batch_size
    if cfg.mix == "real":
        return b, 0
    if cfg.mix == "synthetic":
        return 0, b
    n_syn = round(cfg.synthetic_ratio * b)
    if not 0 < n_syn < b:
        raise ConfigError(f"synthetic_ratio={cfg.synthetic_ratio} of train.batch_size={b} gives {n_syn} synthetic "
                          "samples per batch; mixing needs at least one of each: raise the batch size or "
                          "move the ratio towards 0.5")
    return b - n_syn, n_syn


# --- evaluation and prediction ----------------------------------------------------------------------

def _amp_dtype(device: torch.device) -> torch.dtype | None:
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


def segment_logits(model: torch.nn.Module, images: torch.Tensor, input_size: tuple[int, int] | None = None,
                   amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B, H, W, 3) uint8 images on the model's device -> (B, K, H, W) float32 logits: the images are
    resized to ``input_size`` for the network and the logits resized back (bilinear)."""
    x = images.permute(0, 3, 1, 2).float().div_(255)         # (B, 3, H, W)
    h, w = x.shape[-2:]
    if input_size is not None and (h, w) != tuple(input_size):
        x = F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False, antialias=True)
    amp = torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    with amp:
        logits = model(x).float()                             # (B, K, h', w')
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: SegmentationDataset, input_size: tuple[int, int] | None,
             batch_size: int, device, rank: int = 0, world: int = 1, amp_dtype: torch.dtype | None = None,
             progress: bool = True) -> ConfusionMatrix:
    """Full-resolution confusion matrix over a dataset split (each process takes every world-th image)."""
    device = torch.device(device)
    cm = ConfusionMatrix(dataset.classes.num_classes, dataset.classes.ignore_index)
    was_training = model.training
    model.eval()
    indices = list(range(rank, len(dataset), world))
    for start in tqdm(range(0, len(indices), batch_size), desc="eval", disable=not progress, leave=False):
        chunk = indices[start:start + batch_size]
        images = [dataset.load_image(i) for i in chunk]
        masks = [dataset.load_mask(i) for i in chunk]
        # images of different sizes go through one at a time
        groups = [list(range(len(chunk)))] if len({m.shape for m in masks}) == 1 else [[j] for j in range(len(chunk))]
        for group in groups:
            batch = torch.from_numpy(np.stack([images[j] for j in group])).to(device)
            pred = segment_logits(model, batch, input_size, amp_dtype).argmax(1)
            cm.update(pred, torch.from_numpy(np.stack([masks[j] for j in group])).to(device))
    model.train(was_training)
    return cm


def _resolve_model(model, input_size, device) -> tuple[torch.nn.Module, tuple[int, int] | None, torch.device]:
    if isinstance(model, (str, Path)):
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        net, config = load_segmenter(model)
        return net.to(device), input_size or config.input_size, device
    return model, input_size, next(model.parameters()).device


@torch.no_grad()
def predict_proba(model: torch.nn.Module | str | Path, images, input_size: tuple[int, int] | None = None,
                  batch_size: int = 16, device: str | None = None):
    """Class probabilities (B, K, H, W) float32 for uint8 images (B, H, W, 3).

    ``model``: a segmenter folder (its training size is used and it is loaded on ``device``) or a
    module (used where it is; ``input_size`` (H, W) optional). Numpy in gives numpy out; a tensor
    gives a tensor on the images' device. For many calls, load once with ``models.load_segmenter``.
    """
    net, size, dev = _resolve_model(model, input_size, device)
    as_numpy = not torch.is_tensor(images)
    images_t = torch.from_numpy(np.ascontiguousarray(images)) if as_numpy else images
    if images_t.ndim != 4 or images_t.shape[-1] != 3 or images_t.dtype != torch.uint8:
        raise ValueError(f"images must be (B, H, W, 3) uint8, got {tuple(images_t.shape)} {images_t.dtype}")
    was_training = net.training
    net.eval()
    out = [segment_logits(net, images_t[i:i + batch_size].to(dev), size, _amp_dtype(dev)).softmax(1)
           for i in range(0, len(images_t), batch_size)]
    net.train(was_training)
    probs = torch.cat(out)
    return probs.cpu().numpy() if as_numpy else probs.to(images_t.device)


def predict(model: torch.nn.Module | str | Path, images, input_size: tuple[int, int] | None = None,
            batch_size: int = 16, device: str | None = None):
    """Class ids (B, H, W) int64 for uint8 images (B, H, W, 3); see :func:`predict_proba`."""
    return predict_proba(model, images, input_size, batch_size, device).argmax(1)


def evaluate_segmenter(model_dir: str | Path, data: DataConfig, split: str | None = None, batch_size: int = 8,
                       device: str | None = None, progress: bool = True) -> tuple[ConfusionMatrix, tuple[str, ...]]:
    """Confusion matrix of a trained segmenter on a dataset split, at full resolution."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, config = load_segmenter(model_dir)
    dataset = _build_split(data, split or data.val_split, progress=progress)
    if tuple(config.class_names) != tuple(dataset.classes.names):
        raise ConfigError(f"the segmenter at {model_dir} was trained on classes ({', '.join(config.class_names)}) "
                          f"but dataset '{data.name}' has ({', '.join(dataset.classes.names)})")
    cm = evaluate(model.to(dev), dataset, config.input_size, batch_size, dev, amp_dtype=_amp_dtype(dev),
                  progress=progress)
    return cm, dataset.classes.names


def eval_report(cm: ConfusionMatrix, names, split: str) -> dict:
    return {"split": split, **cm.to_dict(names)}


# --- training ---------------------------------------------------------------------------------------

def _distributed_eval(model, dataset, input_size, cfg: SegRunConfig, accelerator, progress: bool) -> ConfusionMatrix:
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
    cm = evaluate(model, dataset, input_size, cfg.eval_batch_size, accelerator.device, accelerator.process_index,
                  accelerator.num_processes, amp_dtype=amp, progress=progress)
    if accelerator.num_processes > 1:
        total = accelerator.reduce(torch.as_tensor(cm.counts, device=accelerator.device), "sum")
        cm.counts = total.cpu().numpy().astype(np.int64)
    return cm


def train_segmenter(cfg: SegRunConfig, resume: str | None = None, overwrite: bool = False,
                    progress: bool = True) -> Path:
    """Train, evaluate on the real val split, export ``<output_dir>/segmenter`` and ``eval.json``."""
    run_dir = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg.train, None)
    main = accelerator.is_main_process
    if main:
        prepare_run_dir(run_dir, resume, overwrite)
    accelerator.wait_for_everyone()
    show = progress and main

    val_set = _build_split(cfg.data, cfg.data.val_split, show)
    classes = val_set.classes
    n_real, n_syn = batch_split(cfg)
    sources: list[tuple[SegmentationDataset, bool]] = []
    if n_real:
        sources.append((_build_split(cfg.data, cfg.data.train_split, show), False))
    if n_syn:
        synthetic = _build_split(synthetic_data_config(cfg.synthetic, cfg.synthetic_split), cfg.synthetic_split, show,
                                 same_classes_as=classes)
        sources.append((synthetic, True))
    elif cfg.synthetic and main:
        log.info("mix=real: the synthetic set %s is not used", cfg.synthetic)
    frame = frame_size(sources[0][0], cfg.input_size)
    out_size = (cfg.crop_size, cfg.crop_size) if cfg.crop_size else frame
    pairs = TrainPairs(sources, frame, out_size, (cfg.min_scale, cfg.max_scale), cfg.hflip, classes.ignore_index,
                       cache=cfg.cache)
    sampler = MixedBatchSampler([len(ds) for ds, _ in sources], [k for k in (n_real, n_syn) if k], cfg.train.seed,
                                min_batches=accelerator.num_processes)
    loader = torch.utils.data.DataLoader(pairs, batch_sampler=sampler, num_workers=cfg.train.num_workers,
                                         persistent_workers=cfg.train.num_workers > 0)
    num_train = {"real": len(sources[0][0]) if n_real else 0, "synthetic": len(sources[-1][0]) if n_syn else 0}

    ckpt = CheckpointManager(run_dir, keep=cfg.train.keep_checkpoints)
    resume_path = ckpt.resolve(resume) if resume is not None else None
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every process
    # A resumed run takes its weights from the checkpoint: the backbone file is not needed again.
    model, backbone = build_segmenter(cfg.model, classes.num_classes,
                                      None if resume_path else cfg.backbone_weights, cfg.aux_loss)
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if main:
        save_run_config(cfg, run_dir)
        write_json_atomic(run_dir / "classes.json", classes.to_dict())
        log.info("segmenter %s: %.2fM parameters, %s; %d classes; frame %dx%d, crops %dx%d; %d real + %d synthetic "
                 "train pairs, %d real + %d synthetic per batch; %d val images", cfg.model,
                 num_parameters(model) / 1e6, backbone, classes.num_classes, frame[1], frame[0], out_size[1],
                 out_size[0], num_train["real"], num_train["synthetic"], n_real, n_syn, len(val_set))
    optimizer = make_optimizer(model.parameters(), cfg.train)
    scheduler = make_lr_scheduler(optimizer, cfg.train)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    raw_model = accelerator.unwrap_model(model)

    step = 0
    seen = torch.zeros(2, dtype=torch.long, device=accelerator.device)  # (real, synthetic) samples drawn
    if resume_path is not None:
        state = ckpt.load(resume_path, {"model": raw_model}, optimizer, scheduler)
        step = int(state["step"])
        backbone = state["extra"].get("backbone", backbone)
        if main:
            seen += torch.tensor(state["extra"].get("samples_seen", [0, 0]), device=accelerator.device)
            log.info("resumed from step %d", step)
    logger = MetricLogger(run_dir, enabled=main)

    def save(at: int) -> None:
        total = accelerator.reduce(seen.clone(), "sum").tolist()  # every process takes part
        if main:
            ckpt.save(at, {"model": raw_model}, optimizer, scheduler, extra={"samples_seen": total,
                                                                              "backbone": backbone})
        accelerator.wait_for_everyone()

    ignore = classes.ignore_index
    batches = infinite_batches(loader, accelerator, step, max(1, len(loader)))
    bar = tqdm(total=cfg.train.steps, initial=step, desc="train-seg", disable=not show)
    running, postfix = [], {}
    model.train()
    while step < cfg.train.steps:
        # dropout draws from a generator seeded by (seed, step, rank): a resumed run continues exactly
        torch.manual_seed(cfg.train.seed * 1_000_003 + step * 4096 + accelerator.process_index)
        for _ in range(cfg.train.grad_accum):
            _, batch = next(batches)
            images = batch["image"].float().div_(255)
            masks = batch["mask"]
            synthetic = batch["synthetic"].long().sum()
            seen += torch.stack([len(masks) - synthetic, synthetic])
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    logits, aux = model(images, with_aux=True)
                    loss = F.cross_entropy(logits.float(), masks, ignore_index=ignore)
                    if aux is not None:
                        loss = loss + cfg.aux_weight * F.cross_entropy(aux.float(), masks, ignore_index=ignore)
                optimizer_step(accelerator, model, loss, optimizer, scheduler, cfg.train.grad_clip)
            running.append(loss.detach())
        step += 1
        bar.update(1)
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            mean_loss = accelerator.reduce(torch.stack(running).mean(), "mean").item()
            running.clear()
            postfix["loss"] = f"{mean_loss:.4f}"
            bar.set_postfix(postfix)
            logger.log(step, loss=mean_loss, lr=scheduler.get_last_lr()[0])
        if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < cfg.train.steps:
            cm = _distributed_eval(raw_model, val_set, frame, cfg, accelerator, progress=False)
            logger.log(step, val_miou=cm.miou())
            postfix["val_miou"] = f"{cm.miou():.2f}"
            bar.set_postfix(postfix)
        if cfg.train.save_every and step % cfg.train.save_every == 0 and step < cfg.train.steps:
            save(step)
    bar.close()

    cm = _distributed_eval(raw_model, val_set, frame, cfg, accelerator, progress=show)
    save(step)
    total_seen = accelerator.reduce(seen.clone(), "sum").tolist()
    model_dir = run_dir / MODEL_DIR
    if main:
        config = SegmenterConfig(model=cfg.model, num_classes=classes.num_classes, class_names=list(classes.names),
                                 ignore_index=ignore, input_height=frame[0], input_width=frame[1],
                                 aux_loss=cfg.aux_loss, backbone=backbone)
        save_segmenter(raw_model, config, model_dir)
        report = eval_report(cm, classes.names, cfg.data.val_split)
        report.update(
            dataset=cfg.data.name, mix=cfg.mix, synthetic=cfg.synthetic if n_syn else None,
            synthetic_ratio=n_syn / (n_real + n_syn), num_real_train=num_train["real"],
            num_synthetic_train=num_train["synthetic"], per_batch={"real": n_real, "synthetic": n_syn},
            samples_seen={"real": total_seen[0], "synthetic": total_seen[1]}, model=cfg.model,
            backbone=backbone, backbone_loaded=backbone != RANDOM_INIT, parameters=num_parameters(raw_model),
            input_size=list(frame), steps=step)
        write_json_atomic(run_dir / "eval.json", report)
        logger.log(step, val_miou=cm.miou())
        log.info("%s\nmIoU on the real %s split (%s training): %.2f", cm.table(classes.names), cfg.data.val_split,
                 cfg.mix, cm.miou())
    accelerator.wait_for_everyone()
    return model_dir
