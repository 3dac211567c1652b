"""Sandboxes: copies of the project whose commands run the copy's code, not the working tree's."""

import subprocess
import sys

from audioclass import sandbox
from conftest import PROJECT


def test_commands_in_a_sandbox_import_its_own_copy_of_the_package(tmp_path):
    box = sandbox.create(PROJECT, tmp_path / "project", {"split": {"test_fold": 3}})
    (box / "src/audioclass/__init__.py").write_text("MARK = 'sandbox copy'\n")  # what an edit after the copy looks like
    shown = subprocess.run(
        [sys.executable, "-c", "import audioclass; print(audioclass.MARK, audioclass.__file__)"],
        cwd=tmp_path,
        env=sandbox.environment(box),
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.split() == ["sandbox", "copy", str(box.resolve() / "src/audioclass/__init__.py")]
    assert "test_fold: 3" in (box / "params.yaml").read_text()
