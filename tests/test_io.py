import os
import stat

import pytest

from jodiffusion.utils.io import atomic_path, write_json_atomic, write_text_atomic


def test_atomic_write_gives_the_mode_of_a_plain_open(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "hello")
    plain = tmp_path / "b.txt"
    plain.write_text("hello")
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_failed_block_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text().strip().startswith("{")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
