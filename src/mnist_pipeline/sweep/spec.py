"""sweep.yaml's studies, checked before any training: every value a trial can draw passes params.yaml's checks."""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.config import Params, flatten, from_dict, load_params, merged, nested
from mnist_pipeline.errors import ParamsError, PipelineError

PRUNERS = ("hyperband", "median", "none")
STUDY_KEYS = ("trials", "epochs", "validation", "pruner", "seed", "params", "space")
KINDS = ("float", "int", "choices")
SWEEP_FILE = "sweep.yaml"
# params.yaml keys that change where a run is recorded or how it resumes, not what a trial trains.
NOT_TRAINED = ("tracking.", "train.resume", "train.processes")


class SpecError(PipelineError):
    """sweep.yaml cannot describe the search asked for."""


@dataclass(frozen=True)
class Dimension:
    """One searched key: a float or int range (log-scaled or linear), or a list of choices."""

    kind: str  # one of KINDS
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def extremes(self) -> tuple[Any, ...]:
        """The values that bound what a trial can draw: both ends of a range, or every choice."""
        if self.kind == "choices":
            return self.choices
        return (int(self.low), int(self.high)) if self.kind == "int" else (self.low, self.high)


@dataclass(frozen=True)
class StudySpec:
    """A study of sweep.yaml, checked: what it searches, on what budget and split, with which pruner."""

    name: str
    trials: int  # finished (complete or pruned) trials the study runs to
    epochs: int  # each trial's budget: train.epochs
    validation: int  # training images held out to score trials
    pruner: str  # one of PRUNERS
    seed: int  # the sampler's
    params: dict[str, Any]  # dotted params.yaml keys fixed for every trial
    space: dict[str, Dimension]  # dotted params.yaml keys searched

    def trial_params(self, base: dict, drawn: dict[str, Any]) -> Params:
        """The params of a trial: params.yaml's, then the study's fixed keys, its draws and its budget."""
        return with_values(base, {**self.params, **drawn, "train.epochs": self.epochs}, f"sweep.yaml study {self.name}")

    def base(self, base: dict) -> dict[str, Any]:
        """What its trials take from params.yaml's content `base`, unchanged (trial_base)."""
        return trial_base(base, [*self.params, *self.space, "train.epochs"])

    def settings(self) -> dict[str, Any]:
        """The study's own settings, as its parent run's params."""
        return {
            "trials": self.trials,
            "epochs": self.epochs,
            "validation": self.validation,
            "pruner": self.pruner,
            "seed": self.seed,
        }

    def fingerprint(self) -> str:
        """What a study's stored trials depend on: a study resumed with another must not mix them."""
        return json.dumps(
            {
                "epochs": self.epochs,
                "validation": self.validation,
                "seed": self.seed,
                "pruner": self.pruner,
                "params": self.params,
                "space": {k: vars(d) for k, d in self.space.items()},
            },
            sort_keys=True,
            default=list,
        )


def trial_base(base: dict, study_keys: Iterable[str]) -> dict[str, Any]:
    """params.yaml's values flattened, less the keys a study sets (`study_keys`) and those NOT_TRAINED:
    what every trial of the study is trained on, and all of them must share to compare."""
    keys = set(study_keys)
    values = flatten(from_dict(Params, base, source="params.yaml"))
    return {k: v for k, v in sorted(values.items()) if k not in keys and not k.startswith(NOT_TRAINED)}


def project_params(root: Path) -> dict:
    """The project's params.yaml content, checked first as the pipeline checks it."""
    load_params(root / "params.yaml")
    return yaml.safe_load((root / "params.yaml").read_text())


def in_project(root: Path, name: str, trials: int | None = None, epochs: int | None = None) -> tuple[dict, "StudySpec"]:
    """The project's params.yaml content and its sweep.yaml's study `name` over it."""
    base = project_params(root)
    return base, load(root / SWEEP_FILE, name, base, trials, epochs)


def load(path: Path, name: str, base: dict, trials: int | None = None, epochs: int | None = None) -> StudySpec:
    """Study `name` of sweep file `path`, checked against params.yaml's content `base`;
    `trials` and `epochs` override the file's."""
    studies = _read(path)
    if name not in studies:
        raise SpecError(f"{path}: no study {name!r} (studies: {', '.join(studies) or 'none'})")
    raw = studies[name]
    where = f"{path}: studies.{name}"
    if not isinstance(raw, dict):
        raise SpecError(f"{where} must be a mapping of {', '.join(STUDY_KEYS)}")
    unknown = sorted(set(raw) - set(STUDY_KEYS), key=str)
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]} (known: {', '.join(STUDY_KEYS)})")
    missing = [k for k in STUDY_KEYS if k not in raw]
    if missing:
        raise SpecError(f"{where}: missing key {missing[0]}")
    study = StudySpec(
        name=name,
        trials=_count(trials if trials is not None else raw["trials"], f"{where}.trials", minimum=1),
        epochs=_count(epochs if epochs is not None else raw["epochs"], f"{where}.epochs", minimum=1),
        validation=_count(raw["validation"], f"{where}.validation", minimum=1),
        pruner=_choice(raw["pruner"], PRUNERS, f"{where}.pruner"),
        seed=_count(raw["seed"], f"{where}.seed", minimum=0),
        params=_mapping(raw["params"], f"{where}.params"),
        space={
            key: _dimension(value, f"{where}.space.{key}")
            for key, value in _mapping(raw["space"], f"{where}.space").items()
        },
    )
    _check_keys(study, base, where)
    _check_values(study, base, where)
    return study


def with_values(base: dict, values: dict[str, Any], source: str) -> Params:
    """params.yaml's content `base` with dotted keys set, validated as params.yaml is."""
    return from_dict(Params, merged(base, nested(values)), source=source)


def _read(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict) or set(raw) != {"studies"} or not isinstance(raw["studies"], dict):
        raise SpecError(f"{path}: expected one key, studies, mapping each study's name to its settings")
    return raw["studies"]


def _count(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{where} = {value!r}: expected an integer >= {minimum}")
    return value


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise SpecError(f"{where} = {value!r}: expected one of {', '.join(choices)}")
    return value


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise SpecError(f"{where} must be a mapping of dotted params.yaml keys")
    return value


def _dimension(raw: Any, where: str) -> Dimension:
    """{float: [low, high], log: bool}, {int: [low, high], log: bool} or {choices: [...]}."""
    kinds = [k for k in KINDS if isinstance(raw, dict) and k in raw]
    if len(kinds) != 1:
        raise SpecError(f"{where}: expected one of {{float: [low, high]}}, {{int: [low, high]}}, {{choices: [...]}}")
    kind = kinds[0]
    unknown = sorted(set(raw) - {kind, "log"}, key=str)
    if unknown or (kind == "choices" and "log" in raw):
        raise SpecError(f"{where}: unknown key {(unknown or ['log'])[0]}")
    if kind == "choices":
        if not isinstance(raw[kind], list) or not raw[kind]:
            raise SpecError(f"{where}.choices: expected a non-empty list")
        return Dimension(kind, choices=tuple(raw[kind]))
    bounds, log = raw[kind], raw.get("log", False)
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise SpecError(f"{where}.{kind}: expected [low, high]")
    low, high = (_number(b, kind, f"{where}.{kind}") for b in bounds)
    if not low < high:
        raise SpecError(f"{where}.{kind} = {bounds!r}: an empty or inverted range (low must be below high)")
    if not isinstance(log, bool) or (log and low <= 0):
        raise SpecError(f"{where}.log = {log!r}: expected true or false, and true only for a range above 0")
    return Dimension(kind, float(low), float(high), log)


def _number(value: Any, kind: str, where: str) -> float:
    if isinstance(value, bool) or (kind == "int" and not isinstance(value, int)):
        raise SpecError(f"{where}: {value!r} is not {'an integer' if kind == 'int' else 'a number'}")
    try:  # YAML 1.1 reads 1e-3 (no dot) as a string
        return float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{where}: {value!r} is not a number") from None


def _check_keys(study: StudySpec, base: dict, where: str) -> None:
    known = set(flatten(from_dict(Params, base, source="params.yaml")))
    for section in ("params", "space"):
        for key in getattr(study, section):
            if key not in known:
                raise SpecError(f"{where}.{section}: {key} is not a params.yaml key (keys: {', '.join(sorted(known))})")
    if "train.epochs" in study.space or "train.epochs" in study.params:
        raise SpecError(f"{where}: train.epochs is the study's epochs (the budget of each trial), not a searched key")


def _check_values(study: StudySpec, base: dict, where: str) -> None:
    """Every bound and choice, each on top of the fixed keys, as params.yaml's checks take it."""
    try:
        study.trial_params(base, {})
        for key, dimension in study.space.items():
            for value in dimension.extremes():
                study.trial_params(base, {key: value})
    except ParamsError as exc:
        raise SpecError(f"{where}: a value params.yaml would refuse: {exc}") from None
