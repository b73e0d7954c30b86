"""make report: what changed against a base revision, as report/report.md: the params and metrics diffs as
markdown tables, and DVC's plot diffs rendered to PNGs beside it (Vega-Lite through vl-convert: no network).

    python -m mnist_pipeline.evaluation.change_report --base HEAD --out report

The workspace is compared with --base, as `dvc params diff BASE` does. CI posts the file as a pull
request's comment (docs/ci-tests-dependencies.md).
"""

import argparse
import json
import re
import subprocess
from pathlib import Path

import vl_convert

from mnist_pipeline import cli
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.files import atomic_folder

REPORT = "report.md"
SCALE = 2  # PNG pixels per Vega pixel: sharp on high-density screens


def build(base: str, folder: Path) -> str:
    """Write the plot diffs' PNGs into `folder` and return report.md's text, which links them."""
    params = _dvc("params", "diff", base, "--md")
    metrics = _dvc("metrics", "diff", base, "--md")
    plots = json.loads(_dvc("plots", "diff", base, "--json", "-o", str(folder)))["data"]
    lines = [f"# Changes against {base}", "", "## Params", "", params or "No param changed.", ""]
    lines += ["## Metrics", "", metrics or "No metric changed.", "", "## Plots", ""]
    for name, renders in plots.items():
        for render in renders:
            revisions = ", ".join(render["revisions"])
            if render["type"] == "vega":
                title = _title(render["content"]) or name
                image = f"{_slug(name)}.png"
                (folder / image).write_bytes(vl_convert.vegalite_to_png(render["content"], scale=SCALE))
            else:  # an image the pipeline wrote, one per revision, copied into `folder` by DVC
                title, image = f"{name} ({revisions})", Path(render["url"]).name
            lines += [f"### {title}", "", f"![{title}: {revisions}]({image})", ""]
    return "\n".join(lines)


def write(base: str, out: Path) -> Path:
    """Build the report in a new folder, which then takes the place of `out` (the last report)."""
    _check_revision(base)
    if out.exists() and not (out / REPORT).is_file():
        raise PipelineError(f"{out}: exists and holds no {REPORT}; not replacing it")
    with atomic_folder(out) as folder:
        (folder / REPORT).write_text(build(base, folder))
    return out / REPORT


def _title(spec: dict) -> str:
    title = spec.get("title")
    return str(title.get("text", "") if isinstance(title, dict) else title or "")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _check_revision(base: str) -> None:
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"], capture_output=True)
    if found.returncode != 0:
        raise PipelineError(f"BASE={base}: not a git revision here (try HEAD, HEAD~1, main, origin/main)")


def _dvc(*args: str) -> str:
    done = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise PipelineError(f"dvc {' '.join(args[:2])}: {said[-1] if said else f'exit code {done.returncode}'}")
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD", help="git revision to compare the workspace with (default HEAD)")
    parser.add_argument("--out", default="report", help=f"folder of {REPORT} and its images (replaced)")
    args = parser.parse_args(argv)

    def report() -> None:
        print(f"report: wrote {write(args.base, Path(args.out))}")

    return cli.run(report)


if __name__ == "__main__":
    raise SystemExit(main())
