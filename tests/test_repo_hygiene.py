"""What git sees of the pipeline's outputs, and the entry points that must not load torch."""

import shutil
import subprocess
import sys

import pytest

from mnist_pipeline.data.catalog import DATASETS

from support.tools import REPO, clean_env, sh


def test_git_ignores_every_datasets_folder_so_dvc_writes_no_gitignore_there(tmp_path):
    # DVC adds an output to a .gitignore beside it unless git ignores that output already.
    shutil.copy(REPO / ".gitignore", tmp_path / ".gitignore")
    sh("git", "init", "-q", cwd=tmp_path)
    for name in DATASETS:
        assert sh("git", "check-ignore", "-q", f"data/{name}", cwd=tmp_path, check=False).returncode == 0, name


@pytest.mark.slow
@pytest.mark.parametrize(
    "module", ["mnist_pipeline.data.preprocess", "mnist_pipeline.ui", "mnist_pipeline.tracking.env"]
)
def test_loads_without_torch(module):
    # preprocess: pure PIL and numpy; ui prints a link and starts MLflow's server; env: the server imports it.
    check = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", check],
        env=clean_env(PYTHONPATH=str(REPO / "src")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr or f"{module} imported torch"


def test_the_unmarked_tier_refuses_programs_and_processes_but_git():
    # This test is unmarked: tests/support/tiers.py watches it as every other test of its tier.
    import multiprocessing
    import subprocess
    import sys

    from support.tiers import NotInProcess

    with pytest.raises(NotInProcess, match=r"this test runs python[\d.]*: mark it slow"):
        subprocess.run([sys.executable, "-c", "pass"])
    with pytest.raises(NotInProcess, match="this test starts a process: mark it slow"):
        multiprocessing.get_context("spawn").Process(target=print).start()
    assert subprocess.run(["git", "--version"], capture_output=True).returncode == 0
