"""`python -m mnist_pipeline.demo`: the command's path, kept; its code is serving/demo.py."""

from mnist_pipeline.serving.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
