"""The model as ONNX: exported from a checkpoint by a pinned exporter and opset, and run on onnxruntime.

The file carries what a reader needs besides the graph (the class names, the kind, the sha256 of
the checkpoint it came from) in its metadata, as a checkpoint carries its config.
"""

import json
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from mnist_pipeline.data.catalog import IMAGE_SHAPE
from mnist_pipeline.errors import CheckpointError, brief
from mnist_pipeline.files import digest
from mnist_pipeline.training.model import load_checkpoint

# torch's TorchScript-based exporter: 0.07-0.2 s a model here. The torch.export-based one (torch's
# default since 2.9) took 1.7-4.3 s for the same models and needs onnxscript, in every train stage.
# Opset 17 is the newest that exporter covers fully for these layers.
OPSET = 17
INPUT, OUTPUT = "images", "probabilities"  # (N, 1, 28, 28) float32 pixels in [0, 1]; (N, classes)


class Exported(NamedTuple):
    classes: tuple[str, ...]
    kind: str  # mlp | cnn
    checkpoint_sha256: str  # of the checkpoint it was exported from


def export(checkpoint: Path, out: Path) -> None:
    """Write `checkpoint`'s model, softmax included, as an ONNX file at `out` (byte-identical for
    the same checkpoint)."""
    model, cfg, classes = load_checkpoint(checkpoint)
    with warnings.catch_warnings():  # the pinned exporter's notes that it is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            nn.Sequential(model, nn.Softmax(dim=1)).eval(),
            (torch.zeros(1, 1, *IMAGE_SHAPE),),
            out,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        )
    import onnx  # imported by the exporter already

    proto = onnx.load(out)
    about = {"classes": json.dumps(list(classes)), "kind": cfg.kind, "checkpoint_sha256": digest(checkpoint)}
    onnx.helper.set_model_props(proto, about)
    onnx.save(proto, out)


class Session(NamedTuple):
    run: Any  # onnxruntime.InferenceSession
    about: Exported

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, 1, 28, 28) float32 pixels to (N, classes) probabilities, as inference.probabilities."""
        return self.run.run([OUTPUT], {INPUT: np.ascontiguousarray(images, dtype=np.float32)})[0]


def load(path: Path, checkpoint: Path | None = None) -> Session:
    """An onnxruntime session on the file at `path`, on one thread; with `checkpoint`, refused unless
    the file was exported from that very checkpoint."""
    import onnxruntime

    if not Path(path).is_file():
        raise CheckpointError(f"{path}: file not found; run `dvc repro train` first")
    options = onnxruntime.SessionOptions()
    # One thread, as training.device gives torch: the scoring server runs a process per core.
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    try:
        run = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors share no base class below Exception
        raise CheckpointError(f"{path}: not a readable ONNX model ({brief(exc)})") from None
    props = run.get_modelmeta().custom_metadata_map
    try:
        about = Exported(tuple(json.loads(props["classes"])), props["kind"], props["checkpoint_sha256"])
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: an ONNX model, but not one exported by this project") from None
    if checkpoint is not None and digest(checkpoint) != about.checkpoint_sha256:
        raise CheckpointError(f"{path} was not exported from {checkpoint}: run `dvc repro train` to export it again")
    return Session(run, about)
