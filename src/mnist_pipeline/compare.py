"""`python -m mnist_pipeline.compare`: the command's path, kept; its code is evaluation/compare.py."""

from mnist_pipeline.evaluation.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
