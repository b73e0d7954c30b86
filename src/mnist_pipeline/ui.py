"""`python -m mnist_pipeline.ui`: the command's path, kept; its code is tracking/ui.py."""

from mnist_pipeline.tracking.ui import main

if __name__ == "__main__":
    raise SystemExit(main())
