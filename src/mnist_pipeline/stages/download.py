"""DVC stage `download`: fetch the dataset's four raw files and verify their checksums."""

from mnist_pipeline.config import load_params
from mnist_pipeline.data.catalog import DATASETS
from mnist_pipeline.data.fetch import fetch, mirrors_from_env
from mnist_pipeline.stages import run_stage


def download(params: str, out: str) -> None:
    dataset = DATASETS[load_params(params).data.dataset]
    for name, origin in fetch(dataset, out, mirrors_from_env(dataset)).items():
        print(f"{out}/{name}: md5 verified ({origin})")


def main(argv: list[str] | None = None) -> int:
    return run_stage(download, __doc__, argv, params="parameters file", out="folder for the raw files")


if __name__ == "__main__":
    raise SystemExit(main())
