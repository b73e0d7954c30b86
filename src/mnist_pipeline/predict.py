"""`python -m mnist_pipeline.predict`: the command's path, kept; its code is serving/predict.py."""

from mnist_pipeline.serving.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
