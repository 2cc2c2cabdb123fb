"""core.files: atomic writes with the umask's permissions, whole-folder swaps, full-disk errors."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from microgpt_core import files


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_write_atomic_gives_what_a_plain_write_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        files.write_atomic(tmp_path / "a.bin", b"data")
        with open(tmp_path / "plain.bin", "wb") as f:
            f.write(b"data")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "plain.bin"]  # no temporary left


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    files.write_atomic(target, b"old")

    def full(fd):  # a file system that reports the full disk when the data is flushed
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        files.write_atomic(target, b"new" * 1000)
    monkeypatch.undo()
    assert files.is_disk_full(info.value)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_is_disk_full_follows_causes_and_library_messages():
    assert files.is_disk_full(files.DiskFullError("x"))
    assert files.is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    wrapped = ValueError("RESOURCE_EXHAUSTED: Failed to write: No space left on device [os_error_code='28']")
    assert files.is_disk_full(wrapped)
    try:
        try:
            raise OSError(errno.ENOSPC, "full")
        except OSError as err:
            raise RuntimeError("save failed") from err
    except RuntimeError as outer:
        assert files.is_disk_full(outer)
    assert not files.is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_replace_folder_swaps_in_a_whole_folder(tmp_path):
    final, staged = tmp_path / "model", tmp_path / ".staged"
    for folder, text in ((final, "old"), (staged, "new")):
        folder.mkdir()
        (folder / "f").write_text(text)
    files.replace_folder(staged, final)
    assert (final / "f").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    staged.mkdir()
    (staged / "g").write_text("first")
    files.replace_folder(staged, tmp_path / "fresh")  # no old folder: a plain rename
    assert (tmp_path / "fresh" / "g").read_text() == "first"
