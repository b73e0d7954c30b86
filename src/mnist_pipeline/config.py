"""Typed, frozen run parameters read from params.yaml; bad input stops a stage before any work."""

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from mnist_pipeline.errors import ParamsError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = typing.TypeVar("T", bound="DataclassInstance")


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def _at_least_one(value: int) -> str | None:
    return None if value >= 1 else "must be >= 1"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _fraction(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1)"


def _widths(value: tuple[int, ...]) -> str | None:
    return None if value and min(value) >= 1 else "must list at least one width, each >= 1"


def _between(low: float, high: float) -> typing.Callable[[float], str | None]:
    def rule(value: float) -> str | None:
        return None if low <= value <= high else f"must be in [{low:g}, {high:g}]"

    return rule


def _check(rule: typing.Callable[[Any], str | None]) -> dict[str, typing.Callable[[Any], str | None]]:
    """A field's metadata: the rule its value must pass (None: it does; else what is wrong)."""
    return {"check": rule}


@dataclass(frozen=True)
class DataConfig:
    dataset: Literal["mnist", "fashion-mnist"]  # the keys of datasets.DATASETS


@dataclass(frozen=True)
class ModelConfig:
    kind: Literal["mlp", "cnn"]
    # Dense layers: the MLP's, or the CNN's after its convolutions.
    hidden: tuple[int, ...] = field(metadata=_check(_widths))
    channels: tuple[int, ...] = field(metadata=_check(_widths))  # the CNN's convolutions (the MLP has none)
    # Standardise inputs with MNIST's mean/std inside the model, so every consumer feeds raw pixels.
    normalize: bool
    # Share of each hidden dense layer's outputs zeroed while training (0: none, as the article).
    dropout: float = field(metadata=_check(_fraction))


@dataclass(frozen=True)
class AugmentConfig:
    """Random distortions of each training batch (training/augment.py); every strength 0 (the default) is off.
    Each is drawn per image, uniformly within +-strength."""

    rotation: float = field(metadata=_check(_between(0, 180)))  # degrees
    scale: float = field(metadata=_check(_between(0, 0.5)))  # the digit's size times 1 +- scale
    translate: float = field(metadata=_check(_between(0, 8)))  # pixels, each axis
    shear: float = field(metadata=_check(_between(0, 45)))  # degrees, along x
    # Elastic distortion (Simard et al. 2003): a smooth random displacement field whose pixel
    # displacements have this root mean square, in pixels.
    elastic: float = field(metadata=_check(_between(0, 8)))
    stroke: float = field(metadata=_check(_between(0, 1)))  # share of images drawn thinner or thicker by a pixel
    noise: float = field(metadata=_check(_between(0, 1)))  # Gaussian pixel noise, deviation up to this

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) for f in dataclasses.fields(self))


@dataclass(frozen=True)
class TrainConfig:
    lr: float = field(metadata=_check(_positive))
    epochs: int = field(metadata=_check(_at_least_one))
    batch_size: int = field(metadata=_check(_at_least_one))
    optimizer: Literal["sgd", "adamw"]
    momentum: float = field(metadata=_check(_fraction))
    weight_decay: float = field(metadata=_check(_non_negative))
    # Share of the target spread over the other classes (0: plain cross-entropy, as the article).
    label_smoothing: float = field(metadata=_check(_fraction))
    # "onecycle" warms up to `lr` and anneals to near zero over the whole run.
    schedule: Literal["constant", "onecycle"]
    # Continue an interrupted run of the same parameters from its last finished epoch.
    resume: bool
    # DistributedDataParallel processes on this machine, sharing each batch of batch_size.
    processes: int = field(metadata=_check(_at_least_one))
    # Arithmetic of the training steps: bf16 autocast where the device computes bfloat16 natively
    # (the weights and the optimizer stay fp32), fp32 elsewhere (training/device.py).
    precision: Literal["fp32", "bf16"]
    augment: AugmentConfig


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str
    registered_model: str


@dataclass(frozen=True)
class Params:
    seed: int = field(metadata=_check(_non_negative))
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    tracking: TrackingConfig


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a parameters file; raise ParamsError naming the first problem."""
    return from_dict(Params, read_yaml(path), source=str(path))


def read_yaml(path: str | Path, source: str | None = None) -> Any:
    """A YAML file's content; a missing file or a YAML error is a ParamsError naming the file (as `source`)."""
    source = source or str(path)
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ParamsError(f"{source}: file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsError(f"{source}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


def from_dict(cls: type[T], raw: Any, source: str, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping: every key required, unknown keys refused, types coerced."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: {where} must be a mapping of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise ParamsError(f"{source}: unknown key {prefix}{unknown[0]} (known in {where}: {', '.join(fields)})")
    missing = [name for name in fields if name not in raw]
    if missing:
        raise ParamsError(f"{source}: missing key {prefix}{missing[0]}")
    hints = typing.get_type_hints(cls)
    values = {name: _field_value(hints[name], f, raw[name], source, prefix + name) for name, f in fields.items()}
    return cls(**values)


def _field_value(kind: Any, f: dataclasses.Field, value: Any, source: str, key: str) -> Any:
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return from_dict(kind, value, source, key + ".")
    try:
        coerced = _coerce(kind, value)
    except (TypeError, ValueError) as exc:
        raise ParamsError(f"{source}: {key} = {value!r}: {exc}") from None
    problem = f.metadata["check"](coerced) if "check" in f.metadata else None
    if problem:
        raise ParamsError(f"{source}: {key} = {value!r}: {problem}")
    return coerced


def _coerce(kind: Any, value: Any) -> Any:
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(map(str, choices))}")
        return value
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list | tuple):
            raise TypeError("expected a list of integers")
        return tuple(_coerce(int, item) for item in value)
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value
    if isinstance(value, bool):  # bool is an int to Python, never a count or a rate to us
        raise TypeError("expected a number, got a boolean")
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        raise TypeError("expected an integer")
    if kind is float:
        # YAML 1.1 reads 1e-3 (no dot) as a string, so numeric strings are accepted.
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TypeError("expected a number") from None
        if not math.isfinite(number):
            raise ValueError("expected a finite number")
        return number
    if kind is str:
        if not isinstance(value, str) or not value.strip():
            raise TypeError("expected a non-empty string")
        return value
    raise TypeError(f"unsupported parameter type {kind}")


def flatten(params: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to values, as `dvc params diff` names them: {'train.lr': 0.001, ...}."""
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if dataclasses.is_dataclass(value):
            flat.update(flatten(value, f"{prefix}{f.name}."))
        else:
            flat[prefix + f.name] = list(value) if isinstance(value, tuple) else value
    return flat


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys as params.yaml nests them: {'train.lr': 0.1} -> {'train': {'lr': 0.1}}; tuples as lists."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        *groups, last = key.split(".")
        node = tree
        for group in groups:
            node = node.setdefault(group, {})
        node[last] = list(value) if isinstance(value, tuple) else value
    return tree


def dotted(tree: Any, prefix: str = "") -> dict[str, Any]:
    """params.yaml's nesting as dotted keys, the inverse of `nested`: {'train': {'lr': 0.1}} -> {'train.lr': 0.1}."""
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree} if prefix else {}
    return {key: value for name, sub in tree.items() for key, value in dotted(sub, f"{prefix}{name}.").items()}


def merged(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overlay`'s values put in, mapping into mapping; neither is changed."""
    out = dict(base)
    for key, value in overlay.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both else value
    return out
