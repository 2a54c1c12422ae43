"""Atomic writes (``nas_search.utils``): complete or untouched, with ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nas_search.utils import atomic_write, atomic_write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_new_files_get_the_permissions_of_a_plainly_created_file(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        written = atomic_write_text(tmp_path / "atomic.txt", "x")
    finally:
        os.umask(previous)
    assert _mode(written) == _mode(plain) == 0o666 & ~umask  # 0o644 under 022, not the temporary file's 0o600
    assert [item.name for item in tmp_path.iterdir() if item.name.endswith(".tmp")] == []


def test_a_rewrite_keeps_the_files_permissions(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("old")
    os.chmod(path, 0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text("kept")

    def fail(temporary: Path) -> None:
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "kept" and sorted(item.name for item in tmp_path.iterdir()) == ["summary.json"]


def test_storage_passwords_are_hidden_in_written_summaries() -> None:
    from nas_search.search.study import without_password

    assert (
        without_password("postgresql://search:s3cret@127.0.0.1:5432/studies")
        == "postgresql://search:***@127.0.0.1:5432/studies"
    )
    for url in ("postgresql://search@127.0.0.1/studies", "sqlite:///studies/run.db"):
        assert without_password(url) == url


def test_printed_and_written_run_summaries_hide_the_storage_password(capsys: pytest.CaptureFixture[str]) -> None:
    from nas_search.search.runner import print_summary, public_summary

    url = "postgresql://search:s3cret@127.0.0.1:5432/studies"
    summary = {
        "study": "nas-search",
        "storage": url,
        "trials": 0,
        "feasible_fraction": 0.0,
        "best": None,
        "top": [],
        "files": {"storage": url, "supernet": "studies/nas-search/supernet.pt"},
    }
    shown = public_summary(summary)
    assert shown["storage"] == shown["files"]["storage"] == "postgresql://search:***@127.0.0.1:5432/studies"
    assert summary["storage"] == url  # the caller's summary is not changed
    print_summary(shown)
    printed = capsys.readouterr().out
    assert "s3cret" not in printed and "search:***@127.0.0.1" in printed
