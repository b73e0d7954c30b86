"""`python -m mnist_pipeline.serve`: the command's path, kept; its code is serving/serve.py."""

from mnist_pipeline.serving.serve import main

if __name__ == "__main__":
    raise SystemExit(main())
