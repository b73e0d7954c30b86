"""DVC stage `conf`: refuse an edit of conf/config.yaml that params.yaml, which the other stages read, lacks."""

from pathlib import Path

from mnist_pipeline import recipes
from mnist_pipeline.stages import run_stage


def check(params: str) -> None:
    recipes.check_composed(Path(params).resolve().parent)
    print(f"{recipes.CONFIG}: no change that {params} lacks")


def main(argv: list[str] | None = None) -> int:
    return run_stage(check, __doc__, argv, params="parameters file, beside conf/")


if __name__ == "__main__":
    raise SystemExit(main())
