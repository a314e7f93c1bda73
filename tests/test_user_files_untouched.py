"""Nothing of the user's is touched: the tool's temporary names, stale locks, --resume latest without a run,
file names with spaces, weight files cut short, options among overrides, output-folder permissions."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jodiffusion.cli.main import main
from jodiffusion.data.readers.common import format_stem_line, read_stem_list
from jodiffusion.data.readers.folder import read_folder
from jodiffusion.errors import CheckpointError, ConfigError
from jodiffusion.utils import lock
from jodiffusion.utils.ownership import is_blank, remove_temp_files
from jodiffusion.utils.safe_load import load_torch_weights
from jodiffusion.utils.tempnames import is_temp_name, make_temp_dir, make_temp_file, standing_for, temp_name

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAMES = ["ça va 00", "-dash 01", "#hash 02", "plain03", " lead 04", "two  spaces05", "x.png y06", '"quoted" 07',
         "日本語 08", "tab\there 09"]


# --- temporary names ----------------------------------------------------------------------------------

def test_only_the_tools_own_temporary_names_count_as_temporary(tmp_path):
    fd, path = make_temp_file(tmp_path, "generation.json")
    os.close(fd)
    folder = make_temp_dir(tmp_path, "data", "old")
    for name in (path.name, folder.name, temp_name("step_00000001"), temp_name("a b.json")):
        assert is_temp_name(name), name
    assert standing_for(path.name) == "generation.json" and is_temp_name(folder.name, of="data")
    assert not is_temp_name(folder.name, of="dat") and not is_temp_name(folder.name, kinds=("tmp",))
    users = [".thesis-draft.tmp", ".data.2024-backup.old", ".data.my notes.tmp", ".generation.json.x1y2.tmp",
             ".step_00000002.k3j4l5", ".jodiffusion-notes.tmp", ".jodiffusion-lock.json", ".jodiffusion-owner.json"]
    assert not [name for name in users if is_temp_name(name)]


def test_a_users_dotfile_is_neither_blank_nor_removed(tmp_path):
    """A folder holding only ``.thesis-draft.tmp`` counted as empty, and its file was deleted as ours."""
    (tmp_path / ".thesis-draft.tmp").write_text("x")
    assert not is_blank(tmp_path)
    leftover = tmp_path / temp_name("config.yaml")
    leftover.write_text("half")
    assert remove_temp_files(tmp_path) == [leftover.name]
    assert (tmp_path / ".thesis-draft.tmp").read_text() == "x" and not leftover.exists()


# --- locks -----------------------------------------------------------------------------------------------

def _record(pid: int, **extra) -> dict:
    return {"pid": pid, "host": socket.gethostname(), "command": "train", "started": 0, **extra}


@pytest.mark.skipif(lock.process_start(os.getpid()) is None, reason="needs /proc")
def test_a_reused_process_id_is_a_stale_lock(tmp_path):
    """A lock naming a live process that started at another time (its id was reused) is stale; one naming
    the live holder with its own start time is not."""
    folder = tmp_path / "run"
    path = lock.acquire(folder, "train")
    record = json.loads(path.read_text())
    assert record["proc_start"] == lock.process_start(os.getpid())
    lock.release(path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        start = lock.process_start(holder.pid)
        path.write_text(json.dumps(_record(holder.pid, proc_start=start)))
        with pytest.raises(lock.FolderLockedError, match=f"process {holder.pid}"):
            lock.acquire(folder, "train")  # the holder itself: refused
        path.write_text(json.dumps(_record(holder.pid, proc_start=start + 1)))  # the id, reused by another
        lock.release(lock.acquire(folder, "train"))
        path.write_text(json.dumps(_record(holder.pid, proc_start=start, boot_id="an-earlier-boot")))
        lock.release(lock.acquire(folder, "train"))  # taken before a reboot: stale
    finally:
        holder.kill()
        holder.wait()


def test_another_hosts_lock_gives_a_way_out(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / lock.LOCK_FILE
    path.write_text(json.dumps({**_record(1), "host": "elsewhere"}))
    with pytest.raises(lock.FolderLockedError) as info:
        lock.acquire(folder, "train")
    assert "elsewhere" in str(info.value) and f"rm -- {path}" in str(info.value)
    assert path.is_file()


def test_a_lock_name_taken_by_a_folder_is_refused_and_left_as_it_is(tmp_path):
    folder = tmp_path / "run"
    (folder / lock.LOCK_FILE).mkdir(parents=True)
    (folder / lock.LOCK_FILE / "mine.txt").write_text("x")
    os.utime(folder / lock.LOCK_FILE, (0, 0))  # old: an unreadable lock this old used to be taken over
    with pytest.raises(Exception, match="is a folder") as info:
        lock.acquire(folder, "train")
    assert "nothing was changed" in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == [lock.LOCK_FILE]
    assert (folder / lock.LOCK_FILE / "mine.txt").read_text() == "x"


# --- --resume latest without an earlier run -----------------------------------------------------------------

@pytest.mark.parametrize("state", ["missing", "empty", "lock only"])
def test_resume_latest_without_an_earlier_run_is_refused_and_creates_nothing(tmp_path, capsys, state):
    run = tmp_path / "no" / "such" / "run"
    if state != "missing":
        run.mkdir(parents=True)
    if state == "lock only":
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
        (run / lock.LOCK_FILE).write_text(json.dumps(_record(int(dead.stdout))))
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    code = main(["train-vae", "--preset", "tiny", f"output_dir={run}", "train.steps=2", "--resume", "latest"])
    err = capsys.readouterr().err
    assert code == 1 and f"--resume latest: output folder {run}" in err and "no earlier run" in err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_options_and_overrides_come_in_any_order(tmp_path, capsys):
    """``--resume`` between overrides used to end in ``unrecognized arguments: train.steps=2``."""
    run = tmp_path / "run"
    code = main(["train-vae", "--preset", "tiny", f"output_dir={run}", "--resume", "latest", "train.steps=2",
                 "--overwrite", "scale_samples=4"])
    err = capsys.readouterr().err
    assert code == 1 and f"output folder {run} does not exist" in err  # parsed: the resume check spoke
    with pytest.raises(SystemExit):
        main(["train-vae", "--preset", "tiny", f"output_dir={run}", "--overwrite", "not-an-override"])
    assert "unrecognized arguments: not-an-override" in capsys.readouterr().err


# --- file names -----------------------------------------------------------------------------------------

def test_split_list_lines_round_trip_any_file_name(tmp_path):
    names = [*NAMES, "ends.jpg", "back\\slash", "new\nline"]
    path = tmp_path / "train.txt"
    path.write_text("".join(format_stem_line(n) + "\n" for n in names), encoding="utf-8")
    assert read_stem_list(path) == names
    # other tools' lists still read as before
    path.write_text("# a comment\n2007_000032\n/JPEGImages/2007_000033.jpg /SegmentationClassAug/2007_000033.png\n"
                    "2007_000034  1\n")
    assert read_stem_list(path) == ["2007_000032", "2007_000033", "2007_000034"]


def _names_folder(root: Path) -> Path:
    for side in ("images", "masks"):
        (root / side).mkdir(parents=True)
    for i, name in enumerate(NAMES):
        rgb = np.random.default_rng(i).integers(0, 256, (12, 16, 3), dtype=np.uint8)
        ids = np.zeros((12, 16), np.uint8)
        ids[: 2 + i % 5] = 1
        Image.fromarray(rgb).save(root / "images" / f"{name}.png")
        Image.fromarray(ids).save(root / "masks" / f"{name}.png")
    return root


def test_file_names_with_spaces_unicode_dash_and_hash_round_trip(tmp_path, capsys):
    """``ça va 00.png`` failed import ("does not validate"): the split list reader cut each stem at its
    first space. Now import, the readers, validate, captions, stats and export-mmseg keep every name."""
    src = _names_folder(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["import", str(src), "--out", str(out), "--names", "bg,fg", "--no-progress"]) == 0
    stems = {s.stem for split in ("train", "val") for s in read_folder(out, split).samples}
    assert stems == set(NAMES)
    for split in ("train", "val"):
        for s in read_folder(out, split).samples:
            assert s.image_path.name == f"{s.stem}.png" and s.mask_path.name == f"{s.stem}.png"
    assert main(["validate", "--dataset", "folder", "--root", str(out), "--split", "train"]) == 0
    captions = tmp_path / "captions.jsonl"
    assert main(["caption", "--dataset", "folder", "--root", str(out), "--split", "train", "--output-file",
                 str(captions)]) == 0
    captioned = {json.loads(line)["stem"] for line in captions.read_text(encoding="utf-8").splitlines()}
    assert captioned == {s.stem for s in read_folder(out, "train").samples}
    assert main(["export-mmseg", str(out), "--output-file", str(tmp_path / "mmseg.py")]) == 0
    capsys.readouterr()


# --- weight files ----------------------------------------------------------------------------------------

class NotATensor:
    pass


def test_empty_truncated_and_pickled_weight_files_are_one_line_naming_the_file(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.zeros(4, 4)}, good)
    data = good.read_bytes()
    cases = {"empty.pth": (b"", "empty (0 bytes)"), "cut.pth": (data[: len(data) // 2], "truncated zip")}
    for name, (content, why) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=re.escape(why)) as info:
            load_torch_weights(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
    torch.save({"w": NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="pickled objects other than tensors") as info:
        load_torch_weights(tmp_path / "evil.pth")
    assert "weights_only" not in str(info.value) and "NotATensor" in str(info.value)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or not a torch weight file") as info:
        load_torch_weights(tmp_path / "garbage.pth")
    assert "weights_only" not in str(info.value)
    assert torch.equal(load_torch_weights(good)["w"], torch.zeros(4, 4))


# --- refine labels -------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, named", [(["--ignore-index", "300"], "--ignore-index 300"),
                                          (["--ignore-index", "-1"], "--ignore-index -1"),
                                          (["--background-id", "256"], "--background-id 256"),
                                          (["--background-id", "7", "--ignore-index", "7"], "equals")])
def test_refine_labels_are_range_checked(tmp_path, flags, named):
    from jodiffusion.masks.folder import refine_folder

    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "in" / "a.png")
    kw = {"ignore_index": int(flags[flags.index("--ignore-index") + 1]) if "--ignore-index" in flags else 255,
          "background_id": int(flags[flags.index("--background-id") + 1]) if "--background-id" in flags else None}
    with pytest.raises(ConfigError, match=named):
        refine_folder(tmp_path / "in", tmp_path / "out", workers=1, progress=False, **kw)
    assert not (tmp_path / "out").exists()


# --- permissions ----------------------------------------------------------------------------------------

def test_output_folders_get_the_same_permissions_whichever_command_wrote_them(tmp_path, capsys):
    """make-data wrote its folder 0700 (mkdtemp's mode, renamed into place) while import wrote 0755."""
    src = _names_folder(tmp_path / "src")
    assert main(["make-data", str(tmp_path / "shapes"), "--num-train", "2", "--num-val", "1"]) == 0
    assert main(["import", str(src), "--out", str(tmp_path / "imported"), "--names", "bg,fg", "--no-progress"]) == 0
    capsys.readouterr()
    umask = os.umask(0)
    os.umask(umask)
    for out in (tmp_path / "shapes", tmp_path / "imported"):
        assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask, out
