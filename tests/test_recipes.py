"""conf/ and its recipes: params.yaml is conf/config.yaml as Hydra composes it, to the byte;
each recipe holds only what differs from the defaults and composes the same in Hydra as here; bad
recipes are refused naming their file; promote's recipe file; and the checks that keep a hand edit
of params.yaml or conf/ from being lost, against a real git repo (and through the real DVC CLI:
test_recipes_dvc.py)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mnist_pipeline import recipes
from mnist_pipeline.config import Params, dotted, flatten, from_dict, merged
from mnist_pipeline.errors import ParamsError
from mnist_pipeline.files import digest
from mnist_pipeline.sweep.promote import about

from support.tools import REPO, clean_env

SHIPPED = ("cnn", "cnn-aug", "cnn-best", "mlp-best")


def hydra_params(root: Path, *overrides: str) -> str:
    """params.yaml as `dvc exp run` writes it: Hydra's composition of conf/, dumped by OmegaConf."""
    with initialize_config_dir(str(root / "conf"), version_base=None):
        return OmegaConf.to_yaml(compose(config_name="config", overrides=list(overrides)))


def test_params_yaml_is_conf_as_dvc_exp_run_writes_it_to_the_byte():
    text = (REPO / "params.yaml").read_text()
    assert text == hydra_params(REPO)
    assert text == yaml.safe_dump(recipes.defaults(REPO), sort_keys=False)


@pytest.mark.parametrize("name", recipes.names(REPO))
def test_each_recipe_composes_in_hydra_as_it_is_read_here(name):
    composed = yaml.safe_load(hydra_params(REPO, f"experiment={name}", "train.epochs=1"))
    expected = merged(recipes.defaults(REPO), recipes.recipe(REPO, name))
    assert composed == merged(expected, {"train": {"epochs": 1}})  # and -S on top wins over the recipe


def test_the_shipped_recipes_hold_only_what_differs_from_the_defaults():
    assert set(SHIPPED) <= set(recipes.names(REPO))
    base = flatten(from_dict(Params, recipes.defaults(REPO), source="conf"))
    for name in SHIPPED:
        values = dotted(recipes.recipe(REPO, name))
        assert values and all(values[key] != base[key] for key in values), name
    # The augmented CNN is the cnn search's winner with stroke and noise augmentation, in bf16 for 8
    # epochs (its validation accuracy held: docs/performance.md).
    aug, best = dotted(recipes.recipe(REPO, "cnn-aug")), dotted(recipes.recipe(REPO, "cnn-best"))
    changed = {"train.augment.stroke": 0.2, "train.augment.noise": 0.2, "train.epochs": 8, "train.precision": "bf16"}
    assert aug == {**best, **changed}
    # The searches' winners say which trial chose them, as promote writes it.
    for study, trial, accuracy in (("mlp", 58, 0.9904), ("cnn", 4, 0.9956)):
        header = "".join(f"# {line}\n" for line in about(study, trial, accuracy))
        assert (REPO / recipes.RECIPES / f"{study}-best.yaml").read_text().startswith("# @package _global_\n" + header)


def test_conf_documents_every_param_on_its_line():
    # Where a user edits params: every key of conf/config.yaml's params has its comment.
    text = (REPO / recipes.CONFIG).read_text()
    lines = text[text.index("\nseed:") + 1 :].splitlines()
    keys = [line for line in lines if re.match(r"\s*\w+:", line)]
    assert len(keys) == len(dotted(recipes.defaults(REPO))) + 5  # + the groups' own lines
    undocumented = [line for line in keys if "#" not in line and not line.endswith(":")]
    assert not undocumented, undocumented


@pytest.fixture
def project(tmp_path) -> Path:
    """A project folder holding this repo's conf/ and params.yaml."""
    shutil.copytree(REPO / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("train:\n  lrr: 0.1\n", "conf/experiment/bad.yaml: unknown key train.lrr (known in train: lr, epochs,"),
        ("train:\n  lr: abc\n", "conf/experiment/bad.yaml: train.lr = 'abc': expected a number"),
        ("model:\n  kind: rnn\n", "conf/experiment/bad.yaml: model.kind = 'rnn': expected one of mlp, cnn"),
        ("- 1\n", "conf/experiment/bad.yaml: expected a mapping of params.yaml's keys to values"),
        ("train: [\n", "conf/experiment/bad.yaml: not valid YAML at line 3"),
    ],
)
def test_a_bad_recipe_is_refused_naming_its_file_and_key(project, text, error):
    (project / recipes.RECIPES / "bad.yaml").write_text("# @package _global_\n" + text)
    with pytest.raises(ParamsError) as refused:
        recipes.recipe(project, "bad")
    assert str(refused.value).startswith(error)


def test_an_unknown_recipe_is_refused_with_the_names_there_are(project):
    with pytest.raises(ParamsError, match=r"^no recipe 'nope': no file conf/experiment/nope.yaml \(recipes: cnn, "):
        recipes.recipe(project, "nope")


def test_promote_writes_only_what_differs_in_the_params_order_with_its_header(project):
    values = {"train.epochs": 12, "model.kind": "mlp", "train.lr": 0.05, "model.hidden": [256, 128], "seed": 0}
    path = recipes.write(project, "tiny-best", values, about("tiny", 3, 0.98765))
    assert path.read_text() == (
        "# @package _global_\n"
        "# The `tiny` search's winner, chosen on validation: trial 3, validation accuracy 0.9877.\n"
        "# Written by: python -m mnist_pipeline.sweep promote tiny\n"
        "# Run it: dvc exp run -n tiny-best -S experiment=tiny-best\n"
        "model:\n  hidden: [256, 128]\ntrain:\n  lr: 0.05\n  epochs: 12\n"
    )
    assert recipes.recipe(project, "tiny-best") == {
        "model": {"hidden": [256, 128]},
        "train": {"lr": 0.05, "epochs": 12},
    }
    with pytest.raises(ParamsError, match="train.lr = -1: must be > 0"):
        recipes.write(project, "tiny-best", {"train.lr": -1}, [])
    assert recipes.recipe(project, "tiny-best")["train"]["lr"] == 0.05  # nothing written


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, env=clean_env(), capture_output=True, text=True, check=True)
    return done.stdout.strip()


def edit(path: Path, old: str, new: str) -> None:
    assert old in path.read_text(), path
    path.write_text(path.read_text().replace(old, new, 1))


def cnn_params(root: Path) -> str:
    """params.yaml as `dvc exp run -S experiment=cnn` writes it."""
    return yaml.safe_dump(merged(recipes.defaults(root), recipes.recipe(root, "cnn")), sort_keys=False)


@pytest.fixture
def repo(project) -> Path:
    """The project as a git repo with one commit and one DVC experiment of it, refs/exps/<HEAD>/cnn,
    whose params.yaml holds the recipe cnn, as `dvc exp run` leaves them."""
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baseline")
    head = git(project, "rev-parse", "HEAD")
    (project / "params.yaml").write_text(cnn_params(project))
    git(project, "commit", "-qam", "experiment cnn")
    git(project, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/cnn", "HEAD")
    git(project, "reset", "-q", "--hard", head)
    return project


@pytest.mark.slow  # git in a subprocess: the fast tier stays in-process
def test_dvc_exp_run_may_write_params_yaml_over_what_conf_or_an_experiment_holds(repo):
    recipes.check_unsaved(repo)  # the committed composition
    edit(repo / "conf/config.yaml", "lr: 0.001 ", "lr: 0.01  ")
    recipes.check_unsaved(repo)  # conf/ edited since: params.yaml still HEAD's composition
    git(repo, "checkout", "-q", "conf/config.yaml")
    (repo / "params.yaml").write_text(cnn_params(repo))
    recipes.check_unsaved(repo)  # the workspace holds experiment cnn, after `dvc exp run` or `dvc exp apply`


@pytest.mark.slow  # git in a subprocess: the fast tier stays in-process
@pytest.mark.parametrize(
    ("start", "old", "new", "error"),
    [
        (
            "HEAD",
            "lr: 0.001",
            "lr: 0.5",
            "params.yaml: train.lr = 0.5 (conf/config.yaml: 0.001) is a change of its own",
        ),
        ("cnn", "lr: 0.003", "lr: 0.5", "params.yaml: train.lr = 0.5 (experiment cnn: 0.003) is a change of its own"),
    ],
)
def test_dvc_exp_run_is_refused_over_a_hand_edit_of_params_yaml_naming_the_nearest_source(repo, start, old, new, error):
    if start == "cnn":
        (repo / "params.yaml").write_text(cnn_params(repo))
    edit(repo / "params.yaml", old, new)
    with pytest.raises(ParamsError) as refused:
        recipes.check_unsaved(repo)
    assert str(refused.value).startswith(error)
    assert "`git checkout params.yaml`" in str(refused.value)


@pytest.mark.slow  # git in a subprocess: the fast tier stays in-process
def test_a_committed_params_yaml_that_conf_does_not_hold_is_refused_too(repo):
    # Committed by hand (or an experiment applied and committed): composing from conf/ would drop it.
    edit(repo / "params.yaml", "kind: mlp", "kind: cnn")
    git(repo, "commit", "-qam", "cnn by hand")
    with pytest.raises(ParamsError, match=r"^params.yaml: model.kind = 'cnn' \(conf/config.yaml: 'mlp'\)"):
        recipes.check_unsaved(repo)


def lock(root: Path, md5: str) -> None:
    """dvc.lock as DVC writes it after a run in which conf/config.yaml had this md5."""
    deps = [{"path": "conf/config.yaml", "hash": "md5", "md5": md5, "size": 1}]
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"conf": {"cmd": "c", "deps": deps}}}))


def test_repro_is_refused_when_conf_changed_since_the_last_run_and_params_yaml_lacks_it(project, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    lock(project, digest(project / "conf/config.yaml", "md5"))
    edit(project / "conf/config.yaml", "epochs: 50", "epochs: 5")
    with pytest.raises(ParamsError) as refused:
        recipes.check_composed(project)
    assert str(refused.value).startswith(
        "conf/config.yaml changed since the last run (train.epochs = 5, params.yaml: 50), and `dvc repro` runs"
    )
    monkeypatch.setenv("DVC_EXP_NAME", "cnn")
    recipes.check_composed(project)  # inside `dvc exp run`, which wrote params.yaml from conf/ itself


def test_repro_runs_whatever_params_yaml_holds_while_conf_is_as_the_last_run_saw_it(project, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    edit(project / "params.yaml", "kind: mlp", "kind: cnn")  # an experiment applied, or a hand edit
    lock(project, digest(project / "conf/config.yaml", "md5"))
    recipes.check_composed(project)  # conf/ unchanged: nothing of it is left out
    edit(project / "conf/config.yaml", "kind: mlp", "kind: cnn")
    recipes.check_composed(project)  # conf/ changed, and params.yaml holds it (a comment edit, say)
    lock(project, "0" * 32)
    edit(project / "conf/config.yaml", "dropout: 0.0 ", "dropout: 0.1 ")
    with pytest.raises(ParamsError, match=r"\(model.dropout = 0.1, params.yaml: 0.0\)"):
        recipes.check_composed(project)
