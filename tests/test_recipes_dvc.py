"""Recipes by name through the real DVC CLI on a real git repo: `dvc exp run -n NAME -S experiment=NAME`,
in the workspace, queued or in a temporary copy, with `-S` on top; bad recipes and a hand edit of
params.yaml refused in one line before any stage runs, the edit kept; an edit of conf/ refused by
`dvc repro` and run by `dvc exp run`."""

import json
from pathlib import Path

import pytest
import yaml

from mnist_pipeline import recipes
from mnist_pipeline.config import dotted, merged

from support.projects import committed_run, exp_params
from support.tools import run_queue, sh

pytestmark = pytest.mark.slow

ON_TOP = {"train": {"epochs": 1}}  # `-S train.epochs=1`, which must win over every recipe's epochs


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    return committed_run(tmp_path_factory.mktemp("recipes"))


def restore(root: Path) -> None:
    """Back to the committed run: params, conf/, dvc.yaml (its model card), lock, metrics, outputs."""
    sh("git", "checkout", "--", "params.yaml", "conf", "dvc.yaml", "dvc.lock", "metrics", cwd=root)
    sh("dvc", "checkout", "-q", cwd=root)


def expected(root: Path, name: str) -> dict:
    """params.yaml as recipe `name` with `-S train.epochs=1` makes it: the defaults, the recipe, the -S."""
    return merged(merged(recipes.defaults(root), recipes.recipe(root, name)), ON_TOP)


@pytest.fixture(scope="module")
def ran(baseline) -> dict:
    """Three recipes run by name, each with `-S train.epochs=1`: cnn in the workspace (and `dvc params
    diff` then), cnn-aug queued and mlp-best in a temporary copy. Returns `dvc params diff --json`'s."""
    try:
        sh("dvc", "exp", "run", "-n", "cnn", "-S", "experiment=cnn", "-S", "train.epochs=1", cwd=baseline)
        diff = json.loads(sh("dvc", "params", "diff", "--json", cwd=baseline).stdout)["params.yaml"]
        # From the workspace that experiment cnn left: params.yaml is written from conf/ again.
        queue = "dvc exp run --queue -n cnn-aug -S experiment=cnn-aug -S train.epochs=1"
        sh(*queue.split(), cwd=baseline)
        run_queue(baseline, 1)
        temp = "dvc exp run --temp -n mlp-best -S train.epochs=1 -S experiment=mlp-best"  # -S order: no matter
        sh(*temp.split(), cwd=baseline)
    finally:
        restore(baseline)
    return diff


def test_a_recipe_run_by_name_is_an_experiment_of_that_name_with_its_values_and_the_set_params_on_top(baseline, ran):
    rows = exp_params(baseline)
    for name in ("cnn", "cnn-aug", "mlp-best"):
        assert rows[name] == expected(baseline, name), name
    assert rows["cnn"]["model"]["kind"] == "cnn" and rows["cnn-aug"]["train"]["augment"]["noise"] == 0.2


def test_dvc_params_diff_shows_the_recipe_s_values(baseline, ran):
    new = dotted(expected(baseline, "cnn"))
    old = dotted(recipes.defaults(baseline))
    changed = {key: str(value) if isinstance(value, list) else value for key, value in new.items() if value != old[key]}
    assert {key: change["new"] for key, change in ran.items()} == changed  # DVC shows lists as text
    assert ran["model.kind"] == {"old": "mlp", "new": "cnn"} and ran["train.epochs"]["new"] == 1


def refused(root: Path, *command: str) -> str:
    """Run a command that must be refused in one line, before any stage: return that line."""
    before, status = exp_params(root), sh("git", "status", "--porcelain", cwd=root).stdout
    done = sh(*command, cwd=root, check=False)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Running stage" not in done.stdout and done.stderr.count("\n") == 1, done.stdout + done.stderr
    assert sh("git", "status", "--porcelain", cwd=root).stdout == status  # the workspace as it was
    assert exp_params(root).keys() == before.keys()  # no experiment made, none queued
    assert "Queued" not in sh("dvc", "queue", "status", cwd=root).stdout
    return done.stderr


@pytest.mark.parametrize(
    ("mode", "name", "recipe", "error"),
    [
        ("", "nope", None, "ERROR: no recipe 'nope': no file conf/experiment/nope.yaml (recipes: cnn, cnn-aug,"),
        ("--queue", "typo", "train:\n  lrr: 0.1\n", "ERROR: conf/experiment/typo.yaml: unknown key train.lrr"),
        (
            "--temp",
            "abc",
            "train:\n  lr: abc\n",
            "ERROR: conf/experiment/abc.yaml: train.lr = 'abc': expected a number",
        ),
    ],
)
def test_an_unknown_or_bad_recipe_is_refused_in_one_line_before_any_stage(baseline, mode, name, recipe, error):
    path = baseline / recipes.RECIPES / f"{name}.yaml"
    if recipe:
        path.write_text("# @package _global_\n" + recipe)
    try:
        line = refused(baseline, "dvc", "exp", "run", *mode.split(), "-n", name, "-S", f"experiment={name}")
    finally:
        path.unlink(missing_ok=True)
    assert line.startswith(error)


@pytest.mark.parametrize("mode", ["", "--queue", "--temp"])
def test_a_hand_edit_of_params_yaml_is_refused_in_one_line_and_kept(baseline, mode):
    params = baseline / "params.yaml"
    edited = params.read_text().replace("lr: 0.1\n", "lr: 0.5\n")
    params.write_text(edited)
    try:
        line = refused(baseline, "dvc", "exp", "run", *mode.split(), "-S", "train.epochs=1")
        assert params.read_text() == edited
    finally:
        restore(baseline)
    assert line.startswith("ERROR: params.yaml: train.lr = 0.5 (conf/config.yaml: 0.1) is a change of its own")
    assert line.endswith("or drop it with `git checkout params.yaml`\n")


def test_an_edit_of_conf_is_refused_by_repro_and_run_by_exp_run(baseline):
    config = baseline / recipes.CONFIG
    config.write_text(config.read_text().replace("epochs: 2\n", "epochs: 3\n"))
    try:
        repro = sh("dvc", "repro", cwd=baseline, check=False)
        assert repro.returncode != 0 and "Running stage 'train'" not in repro.stdout
        assert "error: conf/config.yaml changed since the last run (train.epochs = 3, params.yaml: 2)" in repro.stderr
        sh("dvc", "exp", "run", "-n", "conf-edit", cwd=baseline)
        assert yaml.safe_load((baseline / "params.yaml").read_text())["train"]["epochs"] == 3
        assert "Data and pipelines are up to date." in sh("dvc", "repro", cwd=baseline).stdout
        assert exp_params(baseline)["conf-edit"]["train"]["epochs"] == 3
    finally:
        restore(baseline)
