import os

import numpy as np
import pytest
import torch
from tiny_clip import save_tiny_clip

from jodiffusion.data.shapes import ShapesDataset
from jodiffusion.data.transforms import resize_pair
from jodiffusion.errors import DatasetError
from jodiffusion.models.image_codec import PixelUnshuffleCodec
from jodiffusion.models.text_encoder import CaptionTextEncoder, CLIPTextEncoder
from jodiffusion.training.latent_cache import LatentCache, sample_latent
from jodiffusion.training.latent_cache_build import build_or_load_cache
from jodiffusion.training.latent_cache_format import META_NAME


class CountingCodec(PixelUnshuffleCodec):
    """Counts encoded images; raises on call number ``fail_at`` to simulate a crash mid-build."""

    def __init__(self, factor=4, fail_at=None, **kw):
        super().__init__(factor, **kw)
        self.images, self.calls, self.fail_at = 0, 0, fail_at

    def _moments(self, images):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        self.images += len(images)
        return super()._moments(images)


def shapes(n=6, resolution=32):
    return ShapesDataset("train", num_images=n, resolution=resolution, seed=0)


@pytest.fixture(scope="module")
def caption_encoder():
    return CaptionTextEncoder.from_captions(shapes(8).captions().values(), dim=32, num_heads=2, num_layers=1)


def build(ds, codec, text_encoder, cache_dir, captions=None, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 4)
    return build_or_load_cache(ds, ds.captions() if captions is None else captions, codec, text_encoder,
                               cache_dir, **kw)


def to_tensor(image):  # (H, W, 3) uint8 -> (1, 3, H, W) in [-1, 1]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1


def test_build_then_load_without_encoding(tmp_path, caption_encoder):
    ds, codec = shapes(), CountingCodec()
    cache = build(ds, codec, caption_encoder, tmp_path)
    assert codec.images == 2 * len(ds)  # original and flipped
    assert len(cache) == len(ds) and cache.latent_shape == (48, 8, 8) and not cache.has_text_embeddings
    item = cache.get(1)
    assert item["img_mean"].shape == item["img_std"].shape == (48, 8, 8)
    assert item["mask"].dtype == torch.long
    assert np.array_equal(item["mask"].numpy(), ds.load_mask(1))
    assert item["caption"] == ds.caption(1) and item["stem"] == ds.stem(1) and "text_emb" not in item
    expected = codec.encode_moments(to_tensor(ds.load_image(1)))[0][0]
    torch.testing.assert_close(item["img_mean"], expected, atol=1e-3, rtol=0)  # stored as float16
    assert torch.equal(item["img_std"], torch.zeros_like(item["img_mean"]))

    codec2 = CountingCodec()
    again = build(ds, codec2, caption_encoder, tmp_path)
    assert codec2.calls == 0 and again.folder == cache.folder
    assert [p.name for p in tmp_path.iterdir()] == [cache.folder.name]


def test_flipped_entries_encode_the_flipped_image(tmp_path, caption_encoder):
    ds, codec = shapes(), CountingCodec(factor=2)
    cache = build(ds, codec, caption_encoder, tmp_path, batch_size=4)
    for i in (0, 5):
        item = cache.get(i, flip=True)
        flipped = ds.load_image(i)[:, ::-1]
        expected = codec.encode_moments(to_tensor(flipped))[0][0]
        torch.testing.assert_close(item["img_mean"], expected, atol=1e-3, rtol=0)
        assert np.array_equal(item["mask"].numpy(), ds.load_mask(i)[:, ::-1]) and item["flip"]
    flips = []
    for epoch in range(20):  # random flips are a function of (seed, epoch, index): varied, yet repeatable
        cache.set_epoch(epoch)
        flips.append(cache[0]["flip"])
        assert cache[0]["flip"] == flips[-1]
    assert set(flips) == {True, False}
    cache.random_flip = False
    assert not any(cache[0]["flip"] for _ in range(5))


def test_changes_rebuild_and_scale_factors_do_not(tmp_path, caption_encoder):
    ds = shapes()
    first = build(ds, CountingCodec(), caption_encoder, tmp_path)
    for ds2, codec in [(ds, CountingCodec(factor=2)), (shapes(7), CountingCodec()),
                       (ShapesDataset("train", 6, 32, seed=1), CountingCodec())]:
        cache = build(ds2, codec, caption_encoder, tmp_path)
        assert codec.calls > 0 and cache.folder != first.folder
    captions = {**ds.captions(), ds.stem(0): "something else"}
    codec = CountingCodec()
    assert build(ds, codec, caption_encoder, tmp_path, captions=captions).get(0)["caption"] == "something else"
    assert codec.calls > 0
    # raw latents are cached: the normalisation factors and which trainable encoder is used do not matter
    codec = CountingCodec(scaling_factor=3.0, shift_factor=0.1)
    other_encoder = CaptionTextEncoder.from_captions(["a b c"], dim=16, num_heads=2)
    assert build(ds, codec, other_encoder, tmp_path).folder == first.folder and codec.calls == 0


def test_frozen_text_encoder_embeddings_are_cached(tmp_path, caption_encoder):
    clip_a = CLIPTextEncoder.from_pretrained(save_tiny_clip(tmp_path / "clip-a", seed=0))
    clip_b = CLIPTextEncoder.from_pretrained(save_tiny_clip(tmp_path / "clip-b", seed=1))
    ds = shapes(4)
    caches = tmp_path / "cache"
    plain = build(ds, CountingCodec(), caption_encoder, caches)
    codec = CountingCodec()
    cache = build(ds, codec, clip_a, caches)
    assert codec.calls > 0 and cache.folder != plain.folder and cache.has_text_embeddings
    emb = cache.get(2)["text_emb"]
    assert emb.shape == (16, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb, clip_a.encode([ds.caption(2)])[0], atol=2e-3, rtol=2e-3)
    codec = CountingCodec()
    assert build(ds, codec, clip_b, caches).folder != cache.folder and codec.calls > 0  # other weights
    codec = CountingCodec()
    assert build(ds, codec, clip_a, caches).folder == cache.folder and codec.calls == 0


def test_a_crash_mid_build_leaves_no_valid_cache(tmp_path, caption_encoder):
    ds = shapes(6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(ds, CountingCodec(fail_at=2), caption_encoder, tmp_path, batch_size=2, shard_size=2)
    assert list(tmp_path.iterdir()) == []  # the temporary build folder is gone
    codec = CountingCodec()
    cache = build(ds, codec, caption_encoder, tmp_path, batch_size=2, shard_size=2)
    assert codec.calls == 3 and len(cache.meta["shards"]) == 3
    # a killed build's final folder can only lack files: missing meta or a damaged shard means rebuild
    (cache.folder / META_NAME).unlink()
    codec = CountingCodec()
    build(ds, codec, caption_encoder, tmp_path, batch_size=2, shard_size=2)
    assert codec.calls > 0
    shard = cache.folder / cache.meta["shards"][1]["file"]
    shard.write_bytes(shard.read_bytes()[:100])
    codec = CountingCodec()
    rebuilt = build(ds, codec, caption_encoder, tmp_path, batch_size=2, shard_size=2)
    assert codec.calls > 0 and torch.equal(rebuilt.get(3)["mask"], cache.get(3)["mask"])


def test_shards_memory_map_and_data_loader(tmp_path, caption_encoder):
    ds = shapes(5)
    loaded = build(ds, CountingCodec(), caption_encoder, tmp_path, batch_size=2, shard_size=2, preload=True)
    mapped = LatentCache(loaded.folder, preload=False)
    assert [s["count"] for s in loaded.meta["shards"]] == [2, 2, 1]
    for i in range(5):
        a, b = loaded.get(i, flip=i % 2 == 1), mapped.get(i, flip=i % 2 == 1)
        assert all(torch.equal(a[k], b[k]) for k in ("img_mean", "img_std", "mask"))
    batch = next(iter(torch.utils.data.DataLoader(mapped, batch_size=3)))
    assert batch["img_mean"].shape == (3, 48, 8, 8) and batch["mask"].shape == (3, 32, 32)
    assert batch["caption"] == [ds.caption(i) for i in range(3)]
    z = sample_latent(batch["img_mean"], batch["img_std"], torch.Generator().manual_seed(0))
    assert torch.equal(z, batch["img_mean"])  # the pixel codec is deterministic
    mean, std = mapped.latent_stats()
    assert -1 <= mean <= 1 and 0 < std <= 1


def test_sample_latent_draws_around_the_mean():
    mean, std = torch.zeros(2, 4, 8, 8), torch.full((2, 4, 8, 8), 0.5)
    z1 = LatentCache.sample_latent(mean, std, torch.Generator().manual_seed(3))
    z2 = sample_latent(mean, std, torch.Generator().manual_seed(3))
    assert torch.equal(z1, z2) and 0.4 < z1.std() < 0.6


def test_missing_caption_names_the_stem_and_the_file(tmp_path, caption_encoder):
    ds = shapes(4)
    captions = ds.captions()
    del captions[ds.stem(2)]
    with pytest.raises(DatasetError, match=r"no caption for sample 'train_000002' in captions file caps\.jsonl"):
        build(ds, CountingCodec(), caption_encoder, tmp_path, captions=captions, captions_file="caps.jsonl")


def test_file_dataset_is_resized_and_rebuilt_when_a_file_changes(tmp_path, caption_encoder):
    from jodiffusion.data.readers.folder import read_folder
    from jodiffusion.data.shapes_folder import write_shapes_dataset

    root = write_shapes_dataset(tmp_path / "data", num_train=3, num_val=1, resolution=32, progress=False)
    ds = read_folder(root, "train")
    codec = CountingCodec()
    cache = build_or_load_cache(ds, root / "captions.jsonl", codec, caption_encoder, tmp_path / "cache",
                                resolution=16, progress=False)
    assert cache.resolution == (16, 16) and cache.latent_shape == (48, 4, 4) and codec.calls > 0
    assert cache.folder.name.startswith("folder-train-")
    image, mask = resize_pair(ds.load_image(0), ds.load_mask(0), 16)
    assert np.array_equal(cache.get(0)["mask"].numpy(), mask)
    path = ds.samples[0].mask_path
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    codec = CountingCodec()
    build_or_load_cache(ds, root / "captions.jsonl", codec, caption_encoder, tmp_path / "cache",
                        resolution=16, progress=False)
    assert codec.calls > 0


def test_resize_pair_crop_covers_then_crops_the_centre():
    image = np.arange(40 * 48 * 3, dtype=np.uint32).reshape(40, 48, 3).astype(np.uint8)
    mask = np.zeros((40, 48), np.uint8)
    mask[:, 24:] = 7
    out_image, out_mask = resize_pair(image, mask, 20, "crop")
    assert out_image.shape == (20, 20, 3) and out_mask.shape == (20, 20)
    assert set(np.unique(out_mask)) == {0, 7}  # nearest: no new label values
    assert (out_mask[:, :10] == 0).all() and (out_mask[:, 10:] == 7).all()
    wide_image, wide_mask = resize_pair(image, mask, (40, 24), "crop")  # no resize needed, only a crop
    assert np.array_equal(wide_mask, mask[:, 12:36]) and np.array_equal(wide_image, image[:, 12:36])
    same = resize_pair(image, mask, (40, 48))
    assert same[0] is image and same[1] is mask
    with pytest.raises(ValueError, match="differ in size"):
        resize_pair(image, mask[:20], 16)


def test_a_dead_build_is_removed_and_a_build_under_way_is_waited_for(tmp_path, caption_encoder, monkeypatch):
    import threading

    from jodiffusion.training import latent_cache_build
    from jodiffusion.utils import lock
    from jodiffusion.utils.tempnames import temp_name

    ds = shapes(4)
    cache = build(ds, CountingCodec(), caption_encoder, tmp_path)
    (cache.folder / META_NAME).unlink()  # incomplete: rebuilt next time
    dead = tmp_path / temp_name(cache.folder.name)  # the build folder of a killed build, however recent
    dead.mkdir()
    (dead / "shard_00000.safetensors").write_bytes(b"half")
    mine = tmp_path / f".{cache.folder.name}.2024-backup.old"  # a user's sibling: not a name of the tool's
    mine.mkdir()
    codec = CountingCodec()
    rebuilt = build(ds, codec, caption_encoder, tmp_path)
    assert codec.calls > 0 and rebuilt.folder == cache.folder and (cache.folder / META_NAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([cache.folder.name, mine.name])

    # another process holds the lock, building the same cache: wait for it, then load what it built
    meta = (cache.folder / META_NAME).read_bytes()
    (cache.folder / META_NAME).unlink()
    monkeypatch.setattr(latent_cache_build, "LOCK_POLL_SECONDS", 0.05)
    held = lock.acquire_beside(cache.folder, "train")

    def the_other_build_finishes():
        (cache.folder / META_NAME).write_bytes(meta)
        lock.release(held)

    timer = threading.Timer(0.5, the_other_build_finishes)
    timer.start()
    codec = CountingCodec()
    loaded = build(ds, codec, caption_encoder, tmp_path)
    timer.join()
    assert codec.calls == 0 and loaded.folder == cache.folder  # the waiting process encoded nothing
    assert not lock.beside_lock_path(cache.folder).exists()
