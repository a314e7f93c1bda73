"""The one guard every command's output folder goes through (utils/output_folder.py): lock, marker,
overwrite, allowed entries, clearing and the clean-up of dead builds. Nothing the user had is touched."""

import pytest

from jodiffusion.errors import DatasetError, JoDiffusionError
from jodiffusion.utils import lock
from jodiffusion.utils.output_folder import OutputRules, check, output_folder
from jodiffusion.utils.ownership import OWNER_FILE, read_owner
from jodiffusion.utils.tempnames import temp_name

RULES = OutputRules("sample", ("images", "grid.png"),
                    not_empty="{folder} is not empty{hint}; pass --overwrite or choose another --out")
BESIDE = OutputRules("import", ("images", "classes.json"), beside=True, error=DatasetError)


def _tree(root):
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _user_folder(path):
    (path / "photos").mkdir(parents=True)
    (path / "photos" / "holiday.png").write_bytes(b"\x89PNG")
    (path / "notes.txt").write_text("keep me")
    (path / ".thesis-draft.tmp").write_text("chapter 1")  # a user's hidden file: not one of the tool's names
    return path


def _own_folder(path):
    with output_folder(path, RULES):
        (path / "images").mkdir()
        (path / "grid.png").write_bytes(b"png")
    return path


def test_a_new_folder_is_created_marked_and_unlocked_afterwards(tmp_path):
    out = tmp_path / "new" / "out"
    with output_folder(out, RULES) as folder:
        assert folder == out and read_owner(out) == "sample" and (out / lock.LOCK_FILE).is_file()
    assert sorted(p.name for p in out.iterdir()) == [OWNER_FILE]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_non_empty_foreign_folder_is_refused_naming_it(tmp_path, overwrite):
    mine = _user_folder(tmp_path / "mine")
    before = _tree(mine)
    refused = r"--overwrite refused: .*mine is not a folder `jodiffusion sample` wrote .*notes\.txt, photos/"
    want = refused if overwrite else r".*mine is not empty; pass --overwrite"
    with pytest.raises(JoDiffusionError, match=want) as info:
        check(mine, RULES, overwrite)
    assert "\n" not in str(info.value)
    with pytest.raises(JoDiffusionError, match=want):
        with output_folder(mine, RULES, overwrite=overwrite):
            raise AssertionError("the block must not run")
    assert _tree(mine) == before  # no lock, no marker left


def test_overwrite_replaces_only_an_owned_folder_holding_only_its_entries(tmp_path):
    out = _own_folder(tmp_path / "out")
    with pytest.raises(JoDiffusionError, match=r"is not empty \(an earlier `jodiffusion sample` wrote it"):
        check(out, RULES)
    (out / "paper_figures").mkdir()
    before = _tree(out)
    with pytest.raises(JoDiffusionError, match=r"did not write: paper_figures/"):
        with output_folder(out, RULES, overwrite=True):
            pass
    assert _tree(out) == before
    (out / "paper_figures").rmdir()
    assert check(out, RULES, overwrite=True)
    with output_folder(out, RULES, overwrite=True):
        assert sorted(p.name for p in out.iterdir()) == sorted([OWNER_FILE, lock.LOCK_FILE])
    # another command's folder is not replaced either
    other = _own_folder(tmp_path / "other")
    with pytest.raises(JoDiffusionError, match="written by `jodiffusion sample`"):
        check(other, OutputRules("refine", ("images", "grid.png")), overwrite=True)


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "out").write_text("mine")
    with pytest.raises(JoDiffusionError, match="is a file"):
        check(tmp_path / "out", RULES)
    with pytest.raises(DatasetError, match=r"--overwrite refused: .*out is a file"):
        check(tmp_path / "out", BESIDE, overwrite=True)
    with pytest.raises(JoDiffusionError, match=r"is a file, so .* cannot be created under it"):
        check(tmp_path / "out" / "sub", RULES)
    assert (tmp_path / "out").read_text() == "mine"


@pytest.mark.parametrize("rules", [RULES, BESIDE], ids=["in-place", "beside"])
def test_a_second_writer_is_refused_naming_the_first(tmp_path, rules):
    out = tmp_path / "out"
    with output_folder(out, rules):
        # (resume: the folder's content would be refused first; the lock refuses even a run continuing it)
        with pytest.raises(lock.FolderLockedError, match=r"`jodiffusion \w+`, process \d+"):
            with output_folder(out, rules, resume=True):
                raise AssertionError("the block must not run")
    assert not (out / lock.LOCK_FILE).exists() and not lock.beside_lock_path(out).exists()


def test_dead_builds_are_removed_and_user_files_stay(tmp_path):
    out = _own_folder(tmp_path / "out")
    dead = out / temp_name("grid.png")  # an atomic write a kill interrupted
    dead.write_bytes(b"half")
    (out / "images" / "notes.txt").write_text("mine")
    with output_folder(out, RULES, resume=True):
        assert not dead.exists() and (out / "images" / "notes.txt").is_file()
    nested = OutputRules("generate", ("images",), nested=True)
    (tmp_path / "gen" / "images").mkdir(parents=True)
    deep = tmp_path / "gen" / "images" / temp_name("0.png")
    deep.write_bytes(b"half")
    (tmp_path / "gen" / "images" / ".thesis-draft.tmp").write_text("mine")
    with output_folder(tmp_path / "gen", nested, resume=True):
        assert not deep.exists() and (tmp_path / "gen" / "images" / ".thesis-draft.tmp").is_file()

    # beside: the build folders of killed runs standing for OUT go, every other sibling stays
    target = tmp_path / "data"
    killed = tmp_path / temp_name("data")
    (killed / "images").mkdir(parents=True)
    swapped = tmp_path / temp_name("data", "old")
    swapped.mkdir()
    user = [tmp_path / ".data.2024-backup.old", tmp_path / ".thesis-draft.tmp", tmp_path / temp_name("other")]
    user[0].mkdir()
    user[1].write_text("chapter 1")
    user[2].mkdir()
    with output_folder(target, BESIDE):
        assert not killed.exists() and not swapped.exists() and not target.exists()
    assert all(p.exists() for p in user)


def test_a_folder_holding_only_dead_writes_counts_as_empty_but_a_users_hidden_file_does_not(tmp_path):
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / temp_name(OWNER_FILE)).write_text('{"comm')  # a kill during the very first write
    assert not check(blank, RULES)
    with output_folder(blank, RULES):
        assert sorted(p.name for p in blank.iterdir()) == sorted([OWNER_FILE, lock.LOCK_FILE])
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".thesis-draft.tmp").write_text("chapter 1")
    with pytest.raises(JoDiffusionError, match="not empty"):
        check(hidden, RULES)
    with pytest.raises(JoDiffusionError, match=r"\.thesis-draft\.tmp"):
        check(hidden, RULES, overwrite=True)
    assert (hidden / ".thesis-draft.tmp").read_text() == "chapter 1"


def test_resume_keeps_the_folder_as_it_is(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "images").mkdir()
    before = _tree(run)
    with output_folder(run, RULES, resume=True):
        assert read_owner(run) is None  # a folder continued as it is is not claimed
    assert _tree(run) == before


def test_a_refused_run_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new"

    def refuse():
        raise JoDiffusionError("refused by the command's own check")

    with pytest.raises(JoDiffusionError, match="refused by"):
        with output_folder(out, RULES, take=refuse):
            pass
    assert not out.exists()
