"""Atomic writes (gdds.files) keep the old file on failure, and what a killed one leaves is recognised."""
from pathlib import Path

import pytest

from gdds.files import write_atomically


def test_atomic_write_replaces_or_keeps(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    write_atomically(target, lambda fh: fh.write(b"first"))
    assert target.read_bytes() == b"first"

    def broken(fh):
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, broken)
    assert target.read_bytes() == b"first"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_a_killed_atomic_write_leaves_a_file_named_for_its_target(tmp_path, monkeypatch):
    """What write_atomically leaves when killed mid-write is recognised (temporary_target), so that an
    owner of the folder (a run's start) removes it; other names are not taken for one."""
    import gdds.files as files

    seen = []

    def die(fh):
        seen.append(Path(fh.name).name)
        raise KeyboardInterrupt  # stands in for a kill after the temporary file was opened

    with pytest.raises(KeyboardInterrupt):
        files.write_atomically(tmp_path / "data.json", die)
    assert files.temporary_target(seen[0]) == "data.json"
    for other in ("data.json", ".data.json.tmp", ".data.json.zz0123456789.tmp", ".tmp-step-1", "x.0123456789ab.tmp"):
        assert files.temporary_target(other) is None
