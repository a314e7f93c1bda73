"""Mask optimisation: refine_mask semantics, equality with the naive reference, folders and the CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from jodiffusion.cli.main import main
from jodiffusion.data import layout
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.metadata import CAMVID_CLASSES, VOC_CLASSES
from jodiffusion.errors import DatasetError, JoDiffusionError
from jodiffusion.masks.folder import SUMMARY_FILE, refine_folder
from jodiffusion.masks.refine import RefineStats, refine_mask
from jodiffusion.utils.ownership import OWNER_FILE

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_refine.py"
_spec = importlib.util.spec_from_file_location("bench_refine", _BENCH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
refine_mask_naive = bench.refine_mask_naive


def grid(rows: str) -> np.ndarray:
    """A mask from whitespace-separated rows of ids, e.g. '1 1 2 / 1 2 2'."""
    return np.array([[int(v) for v in row.split()] for row in rows.strip().split("/")], dtype=np.uint8)


# ------------------------------------------------------------------------------------------------
# Semantics on hand-made masks


def test_speck_inside_a_region_takes_the_surrounding_label():
    mask = np.full((7, 7), 1, dtype=np.uint8)
    mask[3, 3] = 2
    out, stats = refine_mask(mask, tau=20)
    assert (out == 1).all()
    assert stats == RefineStats(components_seen=2, small_components=1, relabelled=1, pixels_changed=1)
    assert stats.to_dict() == {"components_seen": 2, "small_components": 1, "relabelled": 1,
                               "pixels_changed": 1}
    assert mask[3, 3] == 2  # the input is not modified


def test_speck_on_a_border_takes_the_majority_of_its_ring():
    # Classes 1 (cols 0-3) and 2 (cols 4-7); the speck at (3, 3) sees 5 pixels of 1 and 3 of 2.
    mask = np.full((7, 8), 1, dtype=np.uint8)
    mask[:, 4:] = 2
    mask[3, 3] = 3
    out, _ = refine_mask(mask, tau=20)
    assert out[3, 3] == 1
    # Border one column to the left: the ring now has 3 pixels of 1 and 5 of 2.
    mask[:, 3:] = 2
    mask[3, 3] = 3
    out, _ = refine_mask(mask, tau=20)
    assert out[3, 3] == 2


def test_tie_goes_to_the_smallest_label():
    # A 2-pixel speck (3, 3)-(3, 4) straddling the border of 5 (left) and 3 (right):
    # its 10-pixel ring has 5 pixels of each class.
    mask = np.full((7, 8), 5, dtype=np.uint8)
    mask[:, 4:] = 3
    mask[3, 3:5] = 7
    out, stats = refine_mask(mask, tau=20)
    assert out[3, 3] == 3 and out[3, 4] == 3
    assert stats.pixels_changed == 2 and stats.relabelled == 1


def test_tau_is_strict_area_equal_to_tau_is_kept():
    mask = np.full((10, 10), 1, dtype=np.uint8)
    mask[4, 3:7] = 2  # a bar of area 4
    out, stats = refine_mask(mask, tau=4)
    assert np.array_equal(out, mask) and stats.small_components == 0
    out, stats = refine_mask(mask, tau=5)
    assert (out == 1).all() and stats.small_components == 1 and stats.pixels_changed == 4


def test_connectivity_4_and_8_differ_on_a_diagonal_pair():
    mask = np.full((8, 8), 1, dtype=np.uint8)
    mask[3, 3] = mask[4, 4] = 2
    out4, stats4 = refine_mask(mask, tau=2, connectivity=4)  # two components of area 1
    out8, stats8 = refine_mask(mask, tau=2, connectivity=8)  # one component of area 2
    assert (out4 == 1).all() and stats4.small_components == 2 and stats4.relabelled == 2
    assert np.array_equal(out8, mask) and stats8.small_components == 0


def test_ring_includes_corner_neighbours_for_both_connectivities():
    # The centre speck 3 has class 1 on its 4 edges and class 2 on its 4 corners: a 4:4 tie -> 1.
    mask = grid("""2 2 2 2 2 /
                   2 2 1 2 2 /
                   2 1 3 1 2 /
                   2 2 1 2 2 /
                   2 2 2 2 2""")
    for connectivity in (4, 8):
        out, _ = refine_mask(mask, tau=2, connectivity=connectivity)
        assert out[2, 2] == 1
    # One edge pixel becomes 4: edges 1, 1, 1, 4 and corners 2, 2, 2, 2. With the 3x3 ring, 2 wins
    # 4:3; a cross-shaped (edge-only) ring would have chosen 1.
    mask[1, 2] = 4
    for connectivity in (4, 8):
        out, _ = refine_mask(mask, tau=2, connectivity=connectivity)
        assert out[2, 2] == 2


def test_ignore_is_never_chosen_and_ignore_pixels_are_unchanged():
    mask = np.full((5, 5), 255, dtype=np.uint8)
    mask[2, 2] = 2
    mask[1, 1] = 1  # the ring of (2, 2): 7 x ignore + 1 x class 1
    mask[0, 4] = 3
    out, stats = refine_mask(mask, tau=20)
    assert out[2, 2] == 1  # not ignore, although ignore is the most frequent ring value
    # 1 and 3 are small too: their rings are (ignore + the speck 2) and all ignore
    assert out[1, 1] == 2 and out[0, 4] == 3
    assert (out[mask == 255] == 255).all()
    assert stats.components_seen == 3  # ignore pixels are not counted as components

    # an ignore speck inside a class region stays ignore
    mask = np.full((5, 5), 1, dtype=np.uint8)
    mask[2, 2] = 255
    out, stats = refine_mask(mask, tau=20)
    assert out[2, 2] == 255 and stats.small_components == 0


def test_component_whose_ring_is_all_ignore_is_left_unchanged():
    mask = np.full((6, 6), 255, dtype=np.uint8)
    mask[2:4, 2:4] = 4
    out, stats = refine_mask(mask, tau=20)
    assert np.array_equal(out, mask)
    assert stats.small_components == 1 and stats.relabelled == 0 and stats.pixels_changed == 0


def test_component_without_ring_and_components_at_the_border():
    mask = np.full((3, 3), 2, dtype=np.uint8)
    out, stats = refine_mask(mask, tau=20)  # the whole image is one small component: no ring
    assert np.array_equal(out, mask) and stats.small_components == 1
    mask = np.full((6, 6), 1, dtype=np.uint8)
    mask[0, 0] = 2  # corner speck: ring clipped to 3 pixels
    mask[5, 2:4] = 3  # bottom-border speck
    out, _ = refine_mask(mask, tau=20)
    assert (out == 1).all()


def test_background_islands_are_kept_unless_include_background():
    mask = np.full((7, 7), 1, dtype=np.uint8)
    mask[3, 3] = 0
    out, stats = refine_mask(mask, tau=20, background_id=0)
    assert out[3, 3] == 0 and stats.small_components == 0
    out, stats = refine_mask(mask, tau=20, background_id=0, include_background=True)
    assert out[3, 3] == 1 and stats.relabelled == 1
    # another background id
    out, _ = refine_mask(mask, tau=20, background_id=1)
    assert out[3, 3] == 1  # 0 is an ordinary class now; 1 is background and big anyway
    mask = np.full((7, 7), 0, dtype=np.uint8)
    mask[3, 3] = 2
    out, _ = refine_mask(mask, tau=20, background_id=0)
    assert out[3, 3] == 0  # background can win the vote


def test_by_default_no_class_is_background():
    mask = np.full((7, 7), 1, dtype=np.uint8)
    mask[3, 3] = 0
    out, stats = refine_mask(mask, tau=20)  # id 0 is not special unless the dataset says so
    assert out[3, 3] == 1 and stats.small_components == 1 and stats.relabelled == 1
    out, _ = refine_mask(mask, tau=20, background_id=None, include_background=False)
    assert out[3, 3] == 1


def test_camvid_sky_specks_are_cleaned_and_voc_background_specks_kept():
    # CamVid: id 0 is Sky, a class like any other; a 2x2 speck of it inside Road (3) is noise.
    mask = np.full((12, 12), 3, dtype=np.uint8)
    mask[:3] = 0                      # a real band of Sky (36 px) at the top: kept
    mask[6:8, 6:8] = 0                # a 4-pixel Sky speck inside the road
    mask[10, 1] = 8                   # a 1-pixel Car speck
    mask[11, 11] = CAMVID_CLASSES.ignore_index
    kw = {"tau": 20, "background_id": CAMVID_CLASSES.background, "ignore_index": CAMVID_CLASSES.ignore_index}
    out, stats = refine_mask(mask, **kw)
    assert (out[6:8, 6:8] == 3).all() and out[10, 1] == 3
    assert (out[:3] == 0).all() and out[11, 11] == 255
    assert stats.relabelled == 2 and stats.pixels_changed == 5
    assert np.array_equal(out, refine_mask_naive(mask, **kw))
    # VOC: id 0 is the background, whose specks stay unless include_background
    out, _ = refine_mask(mask, tau=20, background_id=VOC_CLASSES.background)
    assert (out[6:8, 6:8] == 0).all() and out[10, 1] == 3
    # the same with the background at another id
    moved = np.where(mask == 0, 5, np.where(mask == 5, 0, mask)).astype(np.uint8)
    out, _ = refine_mask(moved, tau=20, background_id=5)
    assert (out[6:8, 6:8] == 5).all() and out[10, 1] == 3


CHAIN = """1 1 1 2 2 2 /
           1 1 1 2 2 2 /
           1 1 9 2 2 2 /
           7 7 2 8 2 2 /
           7 7 2 2 2 2 /
           7 7 2 2 2 2"""


def _sequential_in_place(mask, tau, class_order):
    """A WRONG refinement that updates in place class by class: its result depends on the order."""
    out = mask.copy()
    for value in class_order:
        labels, n = ndimage.label(out == value)
        for i in range(1, n + 1):
            comp = labels == i
            if comp.sum() >= tau:
                continue
            ring = ndimage.binary_dilation(comp, np.ones((3, 3), bool)) & ~comp
            vals, counts = np.unique(out[ring], return_counts=True)
            out[comp] = vals[counts.argmax()]
    return out


def test_decisions_are_taken_from_the_input_mask():
    # Speck A=9 at (2, 2): ring 1,1,2 / 1,2 / 7,2,8 -> 1:3, 2:3, 7:1, 8:1 -> tie -> 1.
    # Speck B=8 at (3, 3): ring 9,2,2 / 2,2 / 2,2,2 -> 2.
    # Updating in place, B first, would turn A's ring into 1:3, 2:4 and A into 2.
    mask = grid(CHAIN)
    expected = mask.copy()
    expected[2, 2] = 1
    expected[3, 3] = 2
    out, stats = refine_mask(mask, tau=2)
    assert np.array_equal(out, expected)
    assert stats.relabelled == 2
    assert np.array_equal(refine_mask_naive(mask, tau=2), expected)
    # the in-place method really is order dependent here, and one of its orders differs from ours
    a = _sequential_in_place(mask, 2, [8, 9])
    b = _sequential_in_place(mask, 2, [9, 8])
    assert not np.array_equal(a, b) and a[2, 2] == 2


def test_permuting_class_ids_permutes_the_result():
    # Tie-free hand-made case: a non-monotone bijection of the ids gives the permuted result.
    mask = np.full((7, 8), 1, dtype=np.uint8)
    mask[:, 4:] = 2
    mask[3, 3] = 3
    mask[5, 6] = 4
    mask[0, 0:2] = 5
    perm = np.arange(256, dtype=np.uint8)
    perm[[1, 2, 3, 4, 5]] = [5, 3, 1, 2, 4]
    out, _ = refine_mask(mask, tau=3)
    out_p, _ = refine_mask(perm[mask], tau=3)
    assert np.array_equal(out_p, perm[out])


def _tied_components(mask, tau, connectivity):
    """Boolean map of the small components whose ring vote is a tie (reference labelling)."""
    tied = np.zeros(mask.shape, bool)
    for value in np.unique(mask):
        if value in (0, 255):
            continue
        labels, n = ndimage.label(mask == value, bench.STRUCTURES[connectivity])
        for i in range(1, n + 1):
            comp = labels == i
            if comp.sum() >= tau:
                continue
            ring = ndimage.binary_dilation(comp, np.ones((3, 3), bool)) & ~comp
            votes = mask[ring]
            _, counts = np.unique(votes[votes != 255], return_counts=True)
            if counts.size > 1 and np.sort(counts)[-1] == np.sort(counts)[-2]:
                tied |= comp
    return tied


@pytest.mark.parametrize("connectivity", [4, 8])
def test_random_permutations_only_change_the_tie_breaks(connectivity):
    rng = np.random.default_rng(7)
    changed_somewhere = 0
    for _ in range(6):
        mask = _speckled(rng, 40, 48, num_classes=6)
        perm = np.arange(256, dtype=np.uint8)
        perm[1:6] = rng.permutation(np.arange(1, 6))  # 0 (background) and 255 (ignore) stay
        out, stats = refine_mask(mask, tau=8, connectivity=connectivity, background_id=0)
        out_p, _ = refine_mask(perm[mask], tau=8, connectivity=connectivity, background_id=0)
        differ = out_p != perm[out]
        assert not (differ & ~_tied_components(mask, 8, connectivity)).any()
        changed_somewhere += stats.relabelled
    assert changed_somewhere > 50


# ------------------------------------------------------------------------------------------------
# Equality with the naive reference, dtypes and shapes


def _speckled(rng, h, w, num_classes=5, ignore_fraction=0.03):
    """Blocky regions plus speckles of random classes and some ignore pixels."""
    coarse = rng.integers(0, num_classes, size=(h // 8 + 1, w // 8 + 1))
    mask = np.kron(coarse, np.ones((8, 8), dtype=np.int64))[:h, :w].astype(np.uint8)
    n = h * w // 6
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    mask[ys, xs] = rng.integers(0, num_classes, n)
    n_ign = int(h * w * ignore_fraction)
    mask[rng.integers(0, h, n_ign), rng.integers(0, w, n_ign)] = 255
    return mask


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize(("background_id", "include_background"), [(None, False), (0, False), (0, True),
                                                                    (1, False)])
def test_equals_naive_reference_on_random_speckled_masks(connectivity, background_id, include_background):
    rng = np.random.default_rng(100 + connectivity + include_background + 7 * (background_id or 0))
    for i in range(8):
        h, w = (int(v) for v in rng.integers(20, 50, 2))
        mask = _speckled(rng, h, w, num_classes=int(rng.integers(2, 7)))
        tau = int(rng.integers(1, 30))
        kw = {"tau": tau, "connectivity": connectivity, "include_background": include_background,
              "background_id": background_id}
        out, stats = refine_mask(mask, **kw)
        ref = refine_mask_naive(mask, **kw)
        assert np.array_equal(out, ref), f"mask {i}: {np.argwhere(out != ref)[:5]}"
        assert stats.pixels_changed == int((out != mask).sum())


def test_equals_naive_reference_on_a_benchmark_like_mask():
    mask = bench.make_mask(np.random.default_rng(3), size=128, n_specks=120)
    for connectivity in (4, 8):
        out, stats = refine_mask(mask, tau=20, connectivity=connectivity)
        assert np.array_equal(out, refine_mask_naive(mask, tau=20, connectivity=connectivity))
        assert stats.relabelled > 50


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64])
def test_other_integer_dtypes_and_large_or_negative_ids(dtype):
    rng = np.random.default_rng(5)
    base = _speckled(rng, 30, 33).astype(np.int64)
    ids = np.array([-3, 7, 300, 1000, 40000, 65535], dtype=np.int64)
    if dtype != np.uint16:
        ids[-1] = 255  # keep the ignore index present
    mask = np.where(base == 255, 255, ids[np.minimum(base, 4)])
    if dtype == np.uint16:
        mask = np.where(mask < 0, 9, mask)
    mask = mask.astype(dtype)
    for connectivity in (4, 8):
        out, _ = refine_mask(mask, tau=6, connectivity=connectivity, background_id=int(mask[0, 0]))
        assert out.dtype == mask.dtype
        assert np.array_equal(out, refine_mask_naive(mask, tau=6, connectivity=connectivity,
                                                     background_id=int(mask[0, 0])))


def test_thin_shapes_non_contiguous_input_and_no_small_components():
    rng = np.random.default_rng(9)
    for shape in [(1, 30), (30, 1), (1, 1), (2, 2)]:
        mask = rng.integers(0, 3, shape).astype(np.uint8)
        for c in (4, 8):
            assert np.array_equal(refine_mask(mask, 3, c)[0], refine_mask_naive(mask, 3, c))
    big = _speckled(rng, 40, 40)
    view = big[::2, 1::2]  # not contiguous
    assert np.array_equal(refine_mask(view, 5)[0], refine_mask_naive(np.ascontiguousarray(view), 5))
    flat = np.full((5, 5), 3, np.uint8)
    out, stats = refine_mask(flat, tau=2)
    assert np.array_equal(out, flat) and stats.small_components == 0
    assert refine_mask(np.zeros((0, 4), np.uint8))[0].shape == (0, 4)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="connectivity"):
        refine_mask(np.zeros((3, 3), np.uint8), connectivity=6)
    with pytest.raises(ValueError, match="2-D"):
        refine_mask(np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        refine_mask(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="tau"):
        refine_mask(np.zeros((3, 3), np.uint8), tau=-1)


# ------------------------------------------------------------------------------------------------
# Folders


PALETTE = [0, 0, 0, 200, 10, 10, 10, 200, 10, 10, 10, 200] + [7] * (768 - 12)


def _save_palette_png(mask: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(mask)
    im.putpalette(PALETTE)
    im.save(path)


def _noisy(seed: int) -> np.ndarray:
    mask = np.full((24, 24), 1, dtype=np.uint8)
    mask[:, 12:] = 2
    rng = np.random.default_rng(seed)
    mask[rng.integers(0, 24, 15), rng.integers(0, 24, 15)] = 3
    return mask


@pytest.fixture
def mask_dir(tmp_path):
    src = tmp_path / "raw"
    _save_palette_png(_noisy(0), src / "a.png")
    _save_palette_png(_noisy(1), src / "sub" / "b.png")
    Image.fromarray(_noisy(2)).save(src / "sub" / "c.png")  # grayscale "L" PNG
    (src / "notes.txt").write_text("not a mask")
    return src


@pytest.mark.parametrize("workers", [1, 2])
def test_refine_folder_writes_a_new_folder_and_keeps_paths_and_palette(mask_dir, tmp_path, workers):
    out = tmp_path / "refined"
    summary = refine_folder(mask_dir, out, tau=5, workers=workers, progress=False)
    for rel in ("a.png", "sub/b.png", "sub/c.png"):
        with Image.open(mask_dir / rel) as im_in, Image.open(out / rel) as im_out:
            assert im_out.mode == im_in.mode
            assert im_out.getpalette() == im_in.getpalette()
            expected, _ = refine_mask(np.asarray(im_in), tau=5)
            assert np.array_equal(np.asarray(im_out), expected)
    assert sorted(p.name for p in out.rglob("*")) == [OWNER_FILE, "a.png", "b.png", "c.png", SUMMARY_FILE, "sub"]
    on_disk = json.loads((out / SUMMARY_FILE).read_text())
    assert on_disk == summary
    assert summary["masks"] == 3 and summary["failed"] == [] and summary["tau"] == 5
    assert summary["pixels_total"] == 3 * 24 * 24
    assert summary["pixels_changed"] == sum(
        int((np.asarray(Image.open(mask_dir / r)) != np.asarray(Image.open(out / r))).sum())
        for r in ("a.png", "sub/b.png", "sub/c.png"))
    assert summary["relabelled"] > 0 and summary["masks_changed"] == 3


def test_refine_folder_refuses_to_overwrite_or_to_write_into_the_input(mask_dir, tmp_path):
    out = tmp_path / "refined"
    out.mkdir()
    (out / "old.png").write_bytes(b"x")
    with pytest.raises(JoDiffusionError, match="not empty.*overwrite"):
        refine_folder(mask_dir, out, workers=1, progress=False)
    # --overwrite replaces only an earlier refine's output, never a folder of the user's files
    with pytest.raises(JoDiffusionError, match="--overwrite refused.*old.png"):
        refine_folder(mask_dir, out, workers=1, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["old.png"] and (out / "old.png").read_bytes() == b"x"
    out = tmp_path / "refined_again"
    refine_folder(mask_dir, out, workers=1, progress=False)
    (out / "a.png").write_bytes(b"stale")
    refine_folder(mask_dir, out, workers=1, progress=False, overwrite=True)
    assert (out / "sub" / "b.png").is_file() and (out / "a.png").read_bytes() != b"stale"
    (out / "sub" / "notes.txt").write_text("mine")  # a file refine did not write
    with pytest.raises(JoDiffusionError, match=r"did not write: sub/notes\.txt"):
        refine_folder(mask_dir, out, workers=1, progress=False, overwrite=True)
    assert (out / "sub" / "notes.txt").read_text() == "mine"
    with pytest.raises(JoDiffusionError, match="overlap"):
        refine_folder(mask_dir, mask_dir, workers=1, progress=False, overwrite=True)
    with pytest.raises(JoDiffusionError, match="overlap"):
        refine_folder(mask_dir, mask_dir / "refined", workers=1, progress=False)
    with pytest.raises(DatasetError, match="not found"):
        refine_folder(tmp_path / "missing", tmp_path / "o2", workers=1, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no .png"):
        refine_folder(empty, tmp_path / "o3", workers=1, progress=False)


def test_refine_folder_names_an_unreadable_mask(mask_dir, tmp_path):
    (mask_dir / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.new("RGB", (4, 4)).save(mask_dir / "colour.png")
    out = tmp_path / "refined"
    with pytest.raises(DatasetError) as info:
        refine_folder(mask_dir, out, workers=1, progress=False)
    message = str(info.value)
    assert "broken.png" in message and "colour.png" in message and "2 of 5" in message
    assert (out / "a.png").is_file()  # the readable masks were still written
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["masks"] == 3 and len(summary["failed"]) == 2


# ------------------------------------------------------------------------------------------------
# CLI


def test_cli_refine(mask_dir, tmp_path, capsys):
    out = tmp_path / "cli_out"
    rc = main(["refine", str(mask_dir), str(out), "--tau", "5", "--connectivity", "8", "--workers", "1",
               "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "refined 3 masks" in printed and "relabelled" in printed
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["connectivity"] == 8 and summary["tau"] == 5

    rc = main(["refine", str(mask_dir), str(out), "--workers", "1", "--no-progress"])
    assert rc == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["refine", str(mask_dir), str(out), "--workers", "1", "--no-progress", "--overwrite",
                 "--include-background"]) == 0


def test_cli_refine_help(capsys):
    with pytest.raises(SystemExit):
        main(["refine", "--help"])
    text = capsys.readouterr().out
    for option in ("--tau", "--connectivity", "--include-background", "--workers", "--overwrite",
                   "--classes", "--background-id"):
        assert option in text


def _speck_folder(root: Path) -> Path:
    """One mask: Road (3) with a 2x2 speck of id 0 in the middle."""
    mask = np.full((12, 12), 3, dtype=np.uint8)
    mask[5:7, 5:7] = 0
    _save_palette_png(mask, root / "m.png")
    return root


def test_cli_refine_reads_the_background_from_a_classes_file(tmp_path, capsys):
    src = _speck_folder(tmp_path / "raw")
    camvid = tmp_path / "camvid"
    layout.write_classes(camvid, CAMVID_CLASSES)
    voc = tmp_path / "voc"
    layout.write_classes(voc, VOC_CLASSES)
    common = ["--tau", "20", "--workers", "1", "--no-progress"]

    # CamVid: no background, so the speck of Sky is cleaned
    assert main(["refine", str(src), str(tmp_path / "o1"), "--classes", str(camvid / "classes.json"), *common]) == 0
    assert (np.asarray(Image.open(tmp_path / "o1" / "m.png")) == 3).all()
    assert "background=none" in capsys.readouterr().out
    assert json.loads((tmp_path / "o1" / SUMMARY_FILE).read_text())["background_id"] is None
    # VOC (a folder holding classes.json): id 0 is the background, its speck stays
    assert main(["refine", str(src), str(tmp_path / "o2"), "--classes", str(voc), *common]) == 0
    assert (np.asarray(Image.open(tmp_path / "o2" / "m.png"))[5:7, 5:7] == 0).all()
    assert json.loads((tmp_path / "o2" / SUMMARY_FILE).read_text())["background_id"] == 0
    # an explicit id wins over the file; without either nothing is background
    assert main(["refine", str(src), str(tmp_path / "o3"), "--classes", str(camvid), "--background-id", "0",
                 *common]) == 0
    assert (np.asarray(Image.open(tmp_path / "o3" / "m.png"))[5:7, 5:7] == 0).all()
    assert main(["refine", str(src), str(tmp_path / "o4"), *common]) == 0
    assert (np.asarray(Image.open(tmp_path / "o4" / "m.png")) == 3).all()
    # the ignore index comes from the file too
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(ClassInfo(names=("a", "b", "c", "d"), ignore_index=200).to_dict()))
    assert main(["refine", str(src), str(tmp_path / "o5"), "--classes", str(odd), *common]) == 0
    assert json.loads((tmp_path / "o5" / SUMMARY_FILE).read_text())["ignore_index"] == 200
    capsys.readouterr()
    assert main(["refine", str(src), str(tmp_path / "o6"), "--classes", str(tmp_path / "nope.json"), *common]) == 1
    assert "nope.json" in capsys.readouterr().err
