"""need_path: unset, missing and present files and folders, with the key in every error."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlexp.data.paths import need_path
from vlexp.data.templates import EvalDataError


def test_need_path_files_and_folders(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("x")
    assert need_path(str(f), "data.source.path", "table") == f
    assert need_path(tmp_path, "data.source.root", "root", folder=True) == tmp_path
    for unset in (None, ""):
        with pytest.raises(ValueError, match="data.source.path is not set"):
            need_path(unset, "data.source.path", "table")
    with pytest.raises(FileNotFoundError, match=r"data.source.path=.*no such file"):
        need_path(tmp_path / "nope.csv", "data.source.path", "table")
    with pytest.raises(FileNotFoundError, match="no such file"):
        need_path(tmp_path, "k", "table")  # a folder is not a file
    with pytest.raises(FileNotFoundError, match="no such folder"):
        need_path(f, "k", "root", folder=True)  # a file is not a folder
    with pytest.raises(EvalDataError, match="k is not set"):
        need_path(None, "k", "root", error=EvalDataError, unset_error=EvalDataError)
