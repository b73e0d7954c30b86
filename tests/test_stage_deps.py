"""Each stage's deps in dvc.yaml are exactly the package modules its entry point imports, transitively:
an import added without its dep would let DVC skip a stage whose code changed."""

import ast
from pathlib import Path

import pytest
import yaml

from support.tools import REPO

SRC = REPO / "src"
PACKAGE = "mnist_pipeline"
# The one list of modules that a stage imports only to log or report, never to compute its outputs
# (a folder: all of it): changing them, or what only they import, must not rerun it. The train stage
# writes the MLflow record (the tracking package), with the plots and the robustness figures of the
# saved model, and hands them to the stages after it (plots, robustness and handover: real deps of the
# plot and evaluate stages, which write them for DVC), and the model card, into the record and dvc.yaml
# (no DVC output).
REPORT_ONLY = {
    "train": (
        "src/mnist_pipeline/tracking/",
        "src/mnist_pipeline/evaluation/plots.py",
        "src/mnist_pipeline/evaluation/robustness.py",
        "src/mnist_pipeline/stages/handover.py",
        "src/mnist_pipeline/evaluation/card.py",
    )
}


def module_path(name: str) -> Path | None:
    """src/ path of the package module `name` (dotted), or None if it is not one."""
    relative = Path(*name.split("."))
    for candidate in (SRC / relative.with_suffix(".py"), SRC / relative / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def source(name: str) -> Path:
    """src/ path of the package module `name`, which must be one."""
    path = module_path(name)
    assert path is not None, name
    return path


def imported_modules(path: Path) -> set[str]:
    """The package modules that the file at `path` imports (anywhere in it, function bodies too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # submodules, if they are
    found = {name for name in found if name.split(".")[0] == PACKAGE and module_path(name)}
    # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
    return found | {".".join(name.split(".")[:i]) for name in found for i in range(1, name.count(".") + 1)}


def closure(module: str, skip: tuple[str, ...] = ()) -> set[str]:
    """The package modules `module` runs, without those under the paths `skip` and their imports."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen and not source(name).relative_to(REPO).as_posix().startswith(skip):
            seen.add(name)
            todo.extend(imported_modules(source(name)))
    return seen


def stage_modules(name: str, stage: dict) -> set[str]:
    """The package modules a stage runs, as dvc.yaml paths, minus those that only report."""
    entry = stage["cmd"].split(" -m ", 1)[1].split()[0]
    return {source(module).relative_to(REPO).as_posix() for module in closure(entry, REPORT_ONLY.get(name, ()))}


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_exactly_the_modules_it_runs(name):
    listed = {dep for dep in STAGES[name]["deps"] if dep.startswith("src/")}
    needed = stage_modules(name, STAGES[name])
    assert not needed - listed, f"{name}: add to its deps in dvc.yaml: {sorted(needed - listed)}"
    assert not listed - needed, f"{name}: not imported any more, drop from its deps: {sorted(listed - needed)}"


def test_the_import_graph_is_read_right():
    # The train stage reaches the hand-written step through engine, and the launcher through distributed.
    train = closure("mnist_pipeline.stages.train")
    assert {"mnist_pipeline.training.steps", "mnist_pipeline.training.distributed", "mnist_pipeline.stages"} <= train
    assert "mnist_pipeline.tracking" not in closure("mnist_pipeline.stages.evaluate")
    # The tracking package's modules are found through `from package import module` too.
    assert {"mnist_pipeline.tracking.run", "mnist_pipeline.tracking.patience"} <= train
    assert "src/mnist_pipeline/tracking/run.py" not in stage_modules("train", STAGES["train"])


# The package's floors, lowest first (docs/layout.md): a module imports only from its own floor and
# those below it. The top-level modules other than the frame keep old paths working and import anything.
FLOORS = [
    {"cli", "config", "errors", "files", "recipes"},
    {"data"},
    {"training"},
    {"evaluation"},
    {"tracking"},
    {"serving"},
    {"stages", "sweep", "server"},
]
KEPT_PATHS = {"predict", "serve", "demo", "ui", "compare", "inference", "model"}


def floor(module: str) -> int | None:
    """The floor of a package module (dotted), or None for the package itself and the kept paths."""
    room = module.split(".")[1] if module.count(".") else ""
    return next((n for n, rooms in enumerate(FLOORS) if room in rooms), None)


def test_no_import_runs_back_up_the_floors_and_none_goes_round_a_circle() -> None:
    modules = sorted(".".join(p.relative_to(SRC).with_suffix("").parts) for p in (SRC / PACKAGE).rglob("*.py"))
    modules = [m.removesuffix(".__init__") for m in modules]
    rooms = {m.split(".")[1] for m in modules if m.count(".")}
    assert rooms == set().union(*FLOORS, KEPT_PATHS), f"rooms on no floor: {rooms - set().union(*FLOORS, KEPT_PATHS)}"
    upward = []
    for module in modules:
        here = floor(module)
        if here is None:
            continue
        for target in imported_modules(source(module)):
            there = floor(target)
            if there is not None and there > here:
                upward.append(f"{module} -> {target}")
    assert not upward, f"imports that run back up: {upward}"
    # No circle: a depth-first walk of the module graph never meets a module still on its path.
    graph = {m: {t for t in imported_modules(source(m)) if t != m and t.count(".")} for m in modules}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph.get(module, ()):
            assert state.get(target) != 1, f"an import circle: {' -> '.join([*path, module, target])}"
            if target not in state:
                visit(target, [*path, module])
        state[module] = 2

    for module in modules:
        if module not in state:
            visit(module, [])
