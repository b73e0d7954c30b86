"""DVC stage `download`: fetch the four raw MNIST files and verify their checksums."""

from mnist_pipeline.fetch import fetch, mirrors_from_env
from mnist_pipeline.stages import run_stage


def download(out: str) -> None:
    for name, origin in fetch(out, mirrors_from_env()).items():
        print(f"{out}/{name}: md5 verified ({origin})")


def main(argv: list[str] | None = None) -> int:
    return run_stage(download, __doc__, argv, out="folder for the raw files")


if __name__ == "__main__":
    raise SystemExit(main())
