"""The docs stay true: every command, params key, link and module that README.md and docs/*.md quote exists."""

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mnist_pipeline import recipes
from mnist_pipeline.config import Params, flatten, from_dict, load_params, merged
from mnist_pipeline.errors import ParamsError

from support.tools import REPO, clean_env

README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SHELL = {"bash", "sh", "console"}
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")
MODULE = "mnist_pipeline."

# Runs `python -m MODULE --help` for each module named on its command line, in this one process
# (torch, MLflow and FastAPI are imported once), and for each subcommand its usage line offers;
# prints {"MODULE [SUB]": [exit code or null, what it printed]} as the last line.
HELP_SCRIPT = r"""
import contextlib, io, json, re, runpy, sys

def help_of(*argv):
    sys.argv, out = [*argv, "--help"], io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
        return [None, out.getvalue()]  # it ran to its end: --help did not stop it
    except SystemExit as exc:
        return [exc.code, out.getvalue()]
    except Exception as exc:
        return [repr(exc), out.getvalue()]

helps = {}
for module in sys.argv[1:]:
    helps[module] = help_of(module)
    choices = re.findall(r"\{([\w,-]+)\}", helps[module][1].split("\n\n")[0])
    for sub in choices[0].split(",") if choices else []:
        helps[f"{module} {sub}"] = help_of(module, sub)
print(json.dumps(helps))
"""


def where(doc: Path) -> str:
    return str(doc.relative_to(REPO))


def fenced_lines(doc: Path) -> Iterator[str]:
    """The command lines of the doc's shell blocks: every line of bash, the `$ ` lines of console."""
    for lang, body in FENCE.findall(doc.read_text()):
        if lang in SHELL:
            for line in body.replace("\\\n", " ").splitlines():
                if lang != "console" or line.startswith("$ "):
                    yield line.removeprefix("$ ")


def inline_lines(doc: Path) -> Iterator[str]:
    """Inline code that quotes a make target or a package module, outside the fenced blocks."""
    for span in code_spans(doc):
        if re.match(rf"make \w|python -m {re.escape(MODULE)}", span):
            yield span


def code_spans(doc: Path) -> list[str]:
    """The doc's inline code outside fenced blocks, as Markdown pairs backticks (``a `b` c`` too)."""
    return [" ".join(m[2].split()) for m in CODE_SPAN.finditer(FENCE.sub("", doc.read_text()))]


def simple_commands(line: str) -> Iterator[list[str]]:
    """The line's commands (split at &&, |, ; and redirections), without comments or VAR=value prefixes."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command: list[str] = []
    for token in [*lexer, ";"]:
        if set(token) <= set(lexer.punctuation_chars):
            while command and re.match(r"\w+=", command[0]):
                command.pop(0)
            if command:
                yield command
            command = []
        else:
            command.append(token)


def quoted(lines: Iterator[str]) -> Iterator[list[str]]:
    for line in lines:
        yield from simple_commands(line)


def all_commands() -> Iterator[tuple[str, list[str]]]:
    """(doc, command) for every fenced command and every inline make or module command of the docs."""
    for doc in DOCS:
        for command in quoted(fenced_lines(doc)):
            yield where(doc), command
        for command in quoted(inline_lines(doc)):
            yield where(doc), command


def make_targets() -> set[str]:
    """The Makefile's explicit targets, with its simple variables (`VENV := .venv`) expanded."""
    text = (REPO / "Makefile").read_text()
    variables = dict(re.findall(r"^(\w+)\s*[:?]?=\s*(.*)$", text, re.M))
    targets = set()
    for names in re.findall(r"^([^\s#:=][^:=]*):(?!=)", text, re.M):
        for name in names.split():
            targets.add(re.sub(r"\$\((\w+)\)", lambda m: variables.get(m[1], m[0]), name))
    return targets


def module_calls() -> list[tuple[str, list[str]]]:
    """(doc, [module, args...]) for every `-m mnist_pipeline.X` (python or torchrun) the docs quote."""
    calls = []
    for doc, command in all_commands():
        for i, token in enumerate(command[:-1]):
            if token == "-m" and command[i + 1].startswith(MODULE):
                calls.append((doc, command[i + 1 :]))
    return calls


def helps(modules: set[str]) -> dict[str, list]:
    done = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT, *sorted(modules)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(PYTHONPATH=str(REPO / "src")),
    )
    assert done.returncode == 0 and done.stdout.strip(), done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def set_params_problem(assignments: list[str]) -> str | None:
    """Why params.yaml with these `-S key=value` (values read as YAML, as DVC reads them) is refused, or None.
    `-S experiment=NAME` names a recipe, put in first as Hydra composes it, whatever the order."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    named = [a.partition("=")[2] for a in assignments if a.startswith(f"{recipes.GROUP}=")]
    for name in named:
        try:
            raw = merged(raw, recipes.recipe(REPO, name))
        except ParamsError as exc:
            return f"-S {recipes.GROUP}={name}: {exc}"
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        if key == recipes.GROUP:
            continue
        *parents, leaf = key.split(".")
        node = raw
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            return f"-S {assignment}: params.yaml has no key {key}"
        node[leaf] = yaml.safe_load(value)
    try:
        from_dict(Params, raw, source="params.yaml")
    except ParamsError as exc:
        return str(exc)
    return None


def heading_anchors(doc: Path) -> set[str]:
    """GitHub's anchors for the doc's headings: lower case, punctuation dropped, spaces as hyphens."""
    seen: dict[str, int] = {}
    for title in re.findall(r"^#+ (.+)$", FENCE.sub("", doc.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1  # a repeated heading gets -1, -2, ...
    return {f"{slug}-{n}" if n else slug for slug, count in seen.items() for n in range(count + 1)}


def repo_files() -> set[str]:
    """Files git tracks or would track: a link into an ignored output (plots/, mlflow.db) is dead on a clone."""
    done = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(done.stdout.splitlines())


def layout_entries() -> set[str]:
    """The paths docs/layout.md lists under src/mnist_pipeline/, nested by two spaces a level: `stages/train.py`."""
    text = (REPO / "docs" / "layout.md").read_text()
    block = next(body for _, body in FENCE.findall(text) if "\nsrc/mnist_pipeline/\n" in f"\n{body}")
    entries: set[str] = set()
    parents: list[str] = []
    for line in block.split("src/mnist_pipeline/\n", 1)[1].splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            break
        assert indent % 2 == 0, f"docs/layout.md: odd indentation: {line!r}"
        parents[indent // 2 - 1 :] = [line.split()[0]]
        entries.add("".join(parents))
    return entries


def package_entries() -> tuple[set[str], set[str]]:
    """What src/mnist_pipeline holds: the modules and packages (`stages/`) a list must name, and the
    files it may name (`__init__.py`, `__main__.py`, data files such as demo.html)."""
    root = REPO / "src" / "mnist_pipeline"
    required, optional = set(), set()
    for path in root.rglob("*"):
        if "__pycache__" in path.parts:
            continue
        name = path.relative_to(root).as_posix()
        if path.is_dir() and any(path.glob("*.py")):
            required.add(name + "/")
        elif path.suffix == ".py" and path.name not in ("__init__.py", "__main__.py"):
            required.add(name)
        elif path.is_file():
            optional.add(name)
    return required, optional


def test_readme_fits_in_10000_characters():
    assert len(README.read_text()) <= 10_000


def test_readme_quotes_make_test_the_command_ci_runs():
    assert ["make", "test"] in list(quoted(fenced_lines(README)))
    assert "\nmake test\n" in (REPO / ".ci" / "run").read_text()


def test_every_make_target_quoted_is_in_the_makefile():
    targets = make_targets()
    assert {"test", ".venv/.installed"} <= targets  # the parse found them, $(VENV) expanded
    quoted_targets = [
        (doc, t)
        for doc, command in all_commands()
        if command[0] == "make"
        for t in command[1:]
        if not t.startswith("-") and "=" not in t
    ]
    assert len({t for _, t in quoted_targets}) >= 8
    missing = [f"{doc}: make {t}" for doc, t in quoted_targets if t not in targets]
    assert not missing, f"not targets of the Makefile: {missing}"


@pytest.mark.slow
def test_every_module_quoted_answers_help_with_its_subcommands_and_options():
    calls = module_calls()
    assert {"mnist_pipeline.predict", "mnist_pipeline.server", "mnist_pipeline.stages.train"} <= {
        c[0] for _, c in calls
    }
    answers = helps({module for _, (module, *_) in calls})
    problems = []
    for doc, (module, *args) in calls:
        code, text = answers[module]
        if code != 0 or "usage:" not in text:
            problems.append(f"{doc}: python -m {module} --help exited {code}: {text[-300:]}")
            continue
        first = next((a for a in args if not a.startswith("-")), "")
        command = f"{module} {first}" if f"{module} {first}" in answers else module
        if command == module and re.search(r"\{[\w,-]+\}", text.split("\n\n")[0]):
            problems.append(f"{doc}: {module} has no subcommand {first!r}")
            continue
        for option in (a.split("=")[0] for a in args if a.startswith("--")):
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", answers[command][1]):
                problems.append(f"{doc}: python -m {command} has no option {option}")
    assert not problems, "\n".join(problems)


def test_every_set_param_names_a_key_and_passes_validation():
    # Fenced commands only: inline code also quotes refused values on purpose (docs/failures.md).
    runs = [
        (where(doc), [c[i + 1] for i, t in enumerate(c[:-1]) if t in ("-S", "--set-param")])
        for doc in DOCS
        for c in quoted(fenced_lines(doc))
        if c[:3] == ["dvc", "exp", "run"]
    ]
    assert sum(len(a) for _, a in runs) >= 20
    problems = [f"{doc}: {problem}" for doc, assignments in runs if (problem := set_params_problem(assignments))]
    assert not problems, "\n".join(problems)


def test_every_recipe_command_is_short_and_names_its_experiment_after_its_recipe():
    runs = [
        (where(doc), line.split("#")[0].strip())
        for doc in DOCS
        for line in fenced_lines(doc)
        if line.startswith("dvc exp run") and f"-S {recipes.GROUP}=" in line
    ]
    assert ("README.md", "dvc exp run -n cnn-aug -S experiment=cnn-aug") in runs
    problems = []
    for doc, command in runs:
        recipe = re.search(rf"-S {recipes.GROUP}=(\S+)", command)[1]
        if len(command) > 100 or not re.search(rf"-n {re.escape(recipe)}\S* ", command):
            problems.append(f"{doc}: {command} ({len(command)} characters)")
    assert not problems, "\n".join(problems)


def test_every_relative_link_and_image_points_to_a_file_and_heading_of_the_repo():
    files = repo_files()
    checked, problems = 0, []
    for doc in DOCS:
        prose = CODE_SPAN.sub("", FENCE.sub("", doc.read_text()))
        for target in LINK.findall(prose):
            if re.match(r"[a-z][\w+.-]*:", target):
                continue  # http:, https:, mailto:
            checked += 1
            path, _, anchor = target.partition("#")
            resolved = (doc.parent / path).resolve() if path else doc
            name = resolved.relative_to(REPO).as_posix() if resolved.is_relative_to(REPO) else None
            if name is None or not (name in files or any(f.startswith(name + "/") for f in files)):
                problems.append(f"{where(doc)}: {target}: no such file in the repo")
            elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved):
                problems.append(f"{where(doc)}: {target}: no heading #{anchor} there")
    assert checked >= 20
    assert not problems, "\n".join(problems)


def test_layout_lists_every_module_of_src_and_nothing_else():
    listed = layout_entries()
    required, optional = package_entries()
    assert {"config.py", "stages/", "stages/train.py"} <= required
    unlisted, unknown = sorted(required - listed), sorted(listed - required - optional)
    assert not unlisted and not unknown, f"docs/layout.md: {unlisted} not listed; {unknown} not in src/"


def test_params_table_gives_every_key_of_params_yaml_with_its_default():
    rows = re.findall(r"^\| `([\w.]+)` \| `([^`]*)` \|", (REPO / "docs" / "pipeline.md").read_text(), re.M)
    table = {key: yaml.safe_load(default) for key, default in rows}
    assert table == flatten(load_params(REPO / "params.yaml"))
