"""conf/: the params' defaults and the named recipes that `dvc exp run` composes into params.yaml,
each checked, and the checks that keep a hand edit of either file from being lost or ignored."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.config import Params, dotted, flatten, from_dict, merged, nested, read_yaml
from mnist_pipeline.errors import ParamsError
from mnist_pipeline.files import atomic_path, digest

CONFIG = "conf/config.yaml"  # the defaults, documented: where a user edits params
GROUP = "experiment"  # `dvc exp run -S experiment=NAME` picks conf/experiment/NAME.yaml
RECIPES = f"conf/{GROUP}"
PARAMS = "params.yaml"
LOCK = "dvc.lock"


class _Dumper(yaml.SafeDumper):
    """YAML as conf/ writes it: mappings as blocks, lists on one line (`hidden: [512]`)."""


_Dumper.add_representer(
    list, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)
)


def defaults(root: Path) -> dict[str, Any]:
    """conf/config.yaml's params, checked: params.yaml as `dvc exp run` writes it with no recipe and no `-S`."""
    params = _without_defaults(read_yaml(root / CONFIG, CONFIG))
    from_dict(Params, params, source=CONFIG)
    return params


def names(root: Path) -> list[str]:
    """The recipes there are, by name."""
    return sorted(path.stem for path in (root / RECIPES).glob("*.yaml"))


def recipe(root: Path, name: str) -> dict[str, Any]:
    """Recipe `name`'s values, nested as params.yaml nests them, checked: every key one of params.yaml's,
    and the defaults with these values pass params.yaml's checks."""
    path = f"{RECIPES}/{name}.yaml"
    if not (root / path).is_file():
        raise ParamsError(f"no recipe {name!r}: no file {path} (recipes: {', '.join(names(root)) or 'none'})")
    values = read_yaml(root / path, path) or {}
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: expected a mapping of params.yaml's keys to values")
    from_dict(Params, merged(defaults(root), values), source=path)
    return values


def write(root: Path, name: str, values: dict[str, Any], about: list[str]) -> Path:
    """Recipe `name` from dotted values, holding only those that differ from the defaults, in their
    order; `about`: its header's comment lines. Checked before it is written."""
    base = flatten(from_dict(Params, defaults(root), source=CONFIG))
    unknown = sorted(set(values) - set(base))
    if unknown:
        raise ParamsError(f"recipe {name}: unknown key {unknown[0]}")
    changed = nested({key: values[key] for key in base if key in values and values[key] != base[key]})
    from_dict(Params, merged(defaults(root), changed), source=f"recipe {name}")
    comments = "".join(f"# {line}\n" for line in about)
    path = root / RECIPES / f"{name}.yaml"
    with atomic_path(path) as tmp:
        tmp.write_text("# @package _global_\n" + comments + yaml.dump(changed, Dumper=_Dumper, sort_keys=False))
    return path


def check_unsaved(root: Path) -> None:
    """Before `dvc exp run` writes params.yaml from conf/: refuse when params.yaml holds values that it
    would drop unsaved, those of neither conf/config.yaml (now or at HEAD) nor any experiment of HEAD."""
    params, nearest = read_yaml(root / PARAMS, PARAMS), None
    for where, known in _known_params(root):
        if params == known:
            return
        distance = len(_differences(params, known))
        if nearest is None or distance < nearest[0]:
            nearest = (distance, where, known)
    assert nearest is not None  # conf/config.yaml's own params are always known
    key, value, expected = _differences(params, nearest[2])[0]
    raise ParamsError(
        f"{PARAMS}: {key} = {value!r} ({nearest[1]}: {expected!r}) is a change of its own, and `dvc exp run` "
        f"writes {PARAMS} from conf/: put it in {CONFIG}, keep it with `dvc exp run --no-hydra`, "
        f"or drop it with `git checkout {PARAMS}`"
    )


def check_composed(root: Path) -> None:
    """Before a stage runs params.yaml: refuse when conf/config.yaml changed since the last run and
    params.yaml was not written from it, as `dvc repro` (which reads params.yaml alone) would ignore it."""
    if os.environ.get("DVC_EXP_NAME") or not (root / CONFIG).exists():
        return  # inside `dvc exp run`, which wrote params.yaml from conf/ itself
    if _locked_md5(root) == digest(root / CONFIG, "md5"):
        return
    current, params = defaults(root), read_yaml(root / PARAMS, PARAMS)
    if params == current:
        return
    key, value, expected = _differences(current, params)[0]
    raise ParamsError(
        f"{CONFIG} changed since the last run ({key} = {value!r}, {PARAMS}: {expected!r}), and `dvc repro` runs "
        f"{PARAMS} as it is: run `dvc exp run`, which writes {PARAMS} from conf/ and runs the pipeline, "
        f"or undo the change with `git checkout {CONFIG}`"
    )


def _differences(ours: Any, theirs: Any) -> list[tuple[str, Any, Any]]:
    """The dotted keys whose values differ between two params trees: (key, ours, theirs), in order."""
    a, b = dotted(ours), dotted(theirs)
    missing = "(no such key)"
    keys = [*a, *(k for k in b if k not in a)]
    return [(k, a.get(k, missing), b.get(k, missing)) for k in keys if a.get(k, missing) != b.get(k, missing)]


def _known_params(root: Path) -> Iterator[tuple[str, Any]]:
    """Params that git or conf/ holds, where from: conf/config.yaml's, HEAD's, each experiment's of HEAD."""
    yield CONFIG, defaults(root)
    yield f"{CONFIG} at HEAD", _without_defaults(_parse(_git(root, "show", f"HEAD:{CONFIG}")))
    head = (_git(root, "rev-parse", "HEAD") or "").strip()
    refs = f"refs/exps/{head[:2]}/{head[2:]}/"  # DVC's experiments of the commit HEAD
    listed = (
        _git(root, "for-each-ref", "--sort=-committerdate", "--format=%(objectname) %(refname)", refs) if head else ""
    )
    for line in (listed or "").splitlines():
        commit, ref = line.split()
        yield f"experiment {ref.removeprefix(refs)}", _parse(_git(root, "show", f"{commit}:{PARAMS}"))


def _locked_md5(root: Path) -> str | None:
    """The md5 of conf/config.yaml that dvc.lock recorded for the last run of the stage that reads it."""
    lock = yaml.safe_load((root / LOCK).read_text()) if (root / LOCK).exists() else None
    stages = (lock or {}).get("stages") or {}
    deps = [dep for stage in stages.values() for dep in stage.get("deps") or [] if dep.get("path") == CONFIG]
    return deps[0].get("md5") if deps else None


def _parse(text: str | None) -> Any:
    """YAML text's content; None for no text or a YAML error (a committed file is only compared)."""
    try:
        return yaml.safe_load(text) if text is not None else None
    except yaml.YAMLError:
        return None


def _without_defaults(raw: Any) -> Any:
    """A Hydra config's params: all but its `defaults` list."""
    return {key: value for key, value in raw.items() if key != "defaults"} if isinstance(raw, dict) else raw


def _git(root: Path, *args: str) -> str | None:
    """git's output, or None where git refuses (no commit yet, no such file)."""
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None
