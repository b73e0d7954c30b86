"""`python -m mnist_pipeline.predict IMAGE...`: the digit (or class) in each PNG or JPEG file, one line per image."""

import argparse
import sys

import numpy as np

from mnist_pipeline import cli
from mnist_pipeline.data import preprocess
from mnist_pipeline.data.catalog import NUM_CLASSES
from mnist_pipeline.errors import ImageError
from mnist_pipeline.serving import inference


def main(argv: list[str] | None = None) -> int:
    """Print `PATH: DIGIT (PROBABILITY)` per image and `error: ...` per image that fails; exit 1 if any failed."""
    args = _parser().parse_args(argv)
    return cli.run(lambda: _predict(args))


def _predict(args: argparse.Namespace) -> int:
    predict, classes, about, _ = inference.from_options(args)
    print(f"predict: model {about}", file=sys.stderr)  # stdout keeps one line per image
    prepared: list[tuple[str, np.ndarray]] = []
    failed = False
    for path in args.images:
        try:
            prepared.append((path, preprocess.load(path)))
        except ImageError as exc:  # named in its own line; the other images still get their answer
            print(f"error: {exc}", file=sys.stderr)
            failed = True
    if prepared:
        # One batch: a model from MLflow checks its input once per call.
        probabilities = predict(np.stack([pixels for _, pixels in prepared])[:, None])
        for (path, _), p in zip(prepared, probabilities, strict=True):
            guesses = np.argsort(-p, kind="stable")[: args.top]
            print(f"{path}: " + ", ".join(f"{classes[c]} ({p[c]:.2f})" for c in guesses))
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="PNG or JPEG, any size, colour or grey, dark ink on light paper or light on dark",
    )
    inference.add_model_options(parser)
    parser.add_argument(
        "--top",
        type=int,
        default=1,
        choices=range(1, NUM_CLASSES + 1),
        metavar="K",
        help="also print the next guesses: the K most probable digits (default: 1)",
    )
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
