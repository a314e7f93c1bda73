"""Write an MMSegmentation 1.x config that trains on a generated dataset in our folder layout.

The layout (``images/<split>/``, ``masks/<split>/`` with class ids and 255 = ignore) is what
MMSegmentation's ``BaseSegDataset`` reads with ``reduce_zero_label=False``, so the config only names
the folders, the classes and the model. The model comes from MMSegmentation's own base configs,
inherited through the ``mmseg::`` scope (resolved inside the installed package) or from a local
``configs/`` folder of an MMSegmentation checkout. Nothing here imports mmseg.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jodiffusion.data import layout
from jodiffusion.data.classes import ClassInfo
from jodiffusion.errors import ConfigError, DatasetError
from jodiffusion.utils.io import write_text_atomic
from jodiffusion.utils.ownership import check_path_component

# name -> (base model config inside mmseg's configs/, backbone depth, ImageNet-pretrained backbone)
MMSEG_MODELS: dict[str, tuple[str, int, str]] = {
    "deeplabv3_r50": ("_base_/models/deeplabv3_r50-d8.py", 50, "open-mmlab://resnet50_v1c"),
    "deeplabv3_r101": ("_base_/models/deeplabv3_r50-d8.py", 101, "open-mmlab://resnet101_v1c"),
}
RUNTIME_BASE = "_base_/default_runtime.py"
SCHEDULE_BASE = "_base_/schedules/schedule_40k.py"


def _image_suffix(folder: Path) -> str:
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in layout.IMAGE_SUFFIXES:
            return path.suffix
    raise DatasetError(f"{folder} holds no images ({', '.join(layout.IMAGE_SUFFIXES)})")


def _class_info(dataset_dir: Path, classes) -> ClassInfo:
    if classes is None:
        return layout.read_classes(dataset_dir)
    if isinstance(classes, ClassInfo):
        return classes
    return ClassInfo(names=tuple(classes))


def _lines(items: Sequence, indent: str) -> str:
    return "".join(f"{indent}{item!r},\n" for item in items)


def _dataset_block(root: Path, img_dir: str, mask_dir: str, img_suffix: str, pipeline: str) -> str:
    return (f"dict(\n"
            f"        type=dataset_type,\n"
            f"        data_root={str(root)!r},\n"
            f"        metainfo=metainfo,\n"
            f"        data_prefix=dict(img_path={img_dir!r}, seg_map_path={mask_dir!r}),\n"
            f"        img_suffix={img_suffix!r},\n"
            f"        seg_map_suffix='.png',\n"
            f"        reduce_zero_label=False,\n"
            f"        ignore_index=ignore_index,\n"
            f"        pipeline={pipeline})")


def write_mmseg_config(dataset_dir: str | Path, out_file: str | Path, classes: ClassInfo | Sequence[str] | None = None,
                       model: str = "deeplabv3_r50", crop: tuple[int, int] = (512, 512), *, split: str = "train",
                       val_root: str | Path | None = None, val_split: str = "val", batch_size: int = 4,
                       num_workers: int = 4, max_iters: int = 20000, scale: tuple[int, int] | None = None,
                       sync_bn: bool = False, base_dir: str | Path | None = None) -> Path:
    """Write ``out_file``: an MMSegmentation 1.x config training ``model`` on ``dataset_dir``'s ``split``.

    ``classes``: names or a ``ClassInfo`` (default: ``<dataset_dir>/classes.json``). ``crop``: (H, W)
    training crop; ``scale``: mmseg's (W, H) resize target (default ``(4 * W, H)``, the ADE20K recipe).
    Validation runs on ``val_root`` (a real dataset in the same layout, split ``val_split``) when given,
    else on ``dataset_dir``'s ``val_split`` when it exists, else not at all. ``base_dir``: the
    ``configs/`` folder of an MMSegmentation checkout, instead of the installed package's ``mmseg::``.
    """
    if model not in MMSEG_MODELS:
        raise ConfigError(f"unknown mmseg model '{model}'; choose one of {', '.join(MMSEG_MODELS)}")
    if len(crop) != 2 or min(crop) < 1 or batch_size < 1 or max_iters < 1:
        raise ConfigError("crop must be (height, width) > 0 and batch_size, max_iters >= 1")

    check_path_component(split, "split")  # both become folder names in the config
    check_path_component(val_split, "val split")
    root = Path(dataset_dir).expanduser().resolve()
    img_dir, mask_dir = f"{layout.IMAGES_DIR}/{split}", f"{layout.MASKS_DIR}/{split}"
    for folder in (root / img_dir, root / mask_dir):
        if not folder.is_dir():
            raise DatasetError(f"{folder} not found: expected a dataset in the generic layout "
                               f"({layout.IMAGES_DIR}/<split>/, {layout.MASKS_DIR}/<split>/, {layout.CLASSES_FILE})")
    info = _class_info(root, classes)
    crop_h, crop_w = int(crop[0]), int(crop[1])
    scale = tuple(scale) if scale else (4 * crop_w, crop_h)
    interval = max(1, int(max_iters) // 10)  # validation and checkpoint period

    val_dir = Path(val_root).expanduser().resolve() if val_root else root
    val_img, val_mask = f"{layout.IMAGES_DIR}/{val_split}", f"{layout.MASKS_DIR}/{val_split}"
    has_val = (val_dir / val_img).is_dir() and (val_dir / val_mask).is_dir()
    if val_root and not has_val:
        raise DatasetError(f"{val_dir} has no {val_img}/ and {val_mask}/: the validation dataset must be in the "
                           "generic layout too")

    base_model, depth, pretrained = MMSEG_MODELS[model]
    prefix = "mmseg::" if base_dir is None else str(Path(base_dir).expanduser().resolve()) + "/"
    norm = "SyncBN" if sync_bn else "BN"
    val_note = f"{val_dir} (split '{val_split}')" if has_val else "none"
    text = f"""# MMSegmentation 1.x config written by `jodiffusion export-mmseg`.
# Train: {root} (split '{split}'); validate: {val_note}.
# Run with MMSegmentation >= 1.0 installed: python tools/train.py THIS_FILE (or: mim train mmseg THIS_FILE)
_base_ = [
{_lines([prefix + base_model, prefix + RUNTIME_BASE, prefix + SCHEDULE_BASE], "    ")}]

num_classes = {info.num_classes}
ignore_index = {info.ignore_index}
crop_size = {(crop_h, crop_w)!r}
scale = {scale!r}
max_iters = {int(max_iters)}

# {'SyncBN: several GPUs' if sync_bn else 'plain BN (one GPU); pass --sync-bn for several GPUs'}
norm_cfg = dict(type={norm!r}, requires_grad=True)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained={pretrained!r},
    backbone=dict(depth={depth}, norm_cfg=norm_cfg),
    decode_head=dict(num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=num_classes, norm_cfg=norm_cfg))

dataset_type = 'BaseSegDataset'
metainfo = dict(
    classes=(
{_lines(info.names, "        ")}    ),
    palette=[
{_lines([list(c) for c in info.palette], "        ")}    ])

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]

train_dataloader = dict(
    batch_size={int(batch_size)},
    num_workers={int(num_workers)},
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset={_dataset_block(root, img_dir, mask_dir, _image_suffix(root / img_dir), "train_pipeline")})
"""
    if has_val:
        text += f"""val_dataloader = dict(
    batch_size=1,
    num_workers={int(num_workers)},
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset={_dataset_block(val_dir, val_img, val_mask, _image_suffix(val_dir / val_img), "test_pipeline")})
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'], ignore_index=ignore_index)
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval={interval})
"""
    else:
        text += """# no validation set: pass --val-root to score on the real dataset
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters + 1)
"""
    text += f"""param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval={interval}))
"""
    out = Path(out_file)
    write_text_atomic(out, text)
    return out
