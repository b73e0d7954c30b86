"""Benchmark: the article's training loop as published against this project's, at the article's
settings (SGD lr 0.001, batch 64); our epoch against the compute floor (fp32's, and bf16's where the CPU
has it), on a busy machine and two at once; the tuned configuration's time to 98.3 % test accuracy; and
an epoch of the `cnn-aug` recipe in our loop against the same CNN in plain fp32 NCHW autograd.

    make bench                                   # the full run, a few minutes on 2 cores
    python bench/bench.py --epochs 1 --repeats 1 # quicker, noisier

Everything is measured in this one run, the two loops interleaved, so the machine's noise hits
both alike. The last line is machine-readable: speedup=<ratio> tuned_accuracy=<fraction>
tuned_seconds=<s> floor_ratio=<ours/floor> contended_ratio=<busy/alone> parallel_ratio=<two/alone>
article_epoch_seconds=<s> cnn_epoch_seconds=<s> cnn_speedup=<plain/ours> bf16_floor_ratio=<ours/bf16 floor>,
then inference on onnxruntime against PyTorch (runtimes.py), for the MLP and the CNN:
<kind>_onnx_single_speedup=<torch/onnx, one image> <kind>_onnx_batch_speedup=<torch/onnx, batch 256>
<kind>_onnx_single_us=<us> <kind>_onnx_batch_ms=<ms>
"""

import argparse
import dataclasses
import gzip
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
import yaml
from torch import nn
from torchvision.transforms import ToTensor

from mnist_pipeline import recipes
from mnist_pipeline.config import Params, dotted
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.sweep.spec import with_values
from mnist_pipeline.training import device as compute
from mnist_pipeline.training import engine
from mnist_pipeline.training.model import CNN

import runtimes

TARGET = 0.983
# The tuned recipe, conf/experiment/mlp-best.yaml: the `mlp` search's winner (sweep.yaml), chosen on a
# validation split held out of the training set, never on the test set. `python -m mnist_pipeline.sweep
# promote mlp` wrote it; `dvc exp run -n mlp-best -S experiment=mlp-best` runs it in the pipeline.
TUNED_RECIPE = "mlp-best"
# The recipe whose CNN epoch is timed in our loop against plain fp32 NCHW autograd (README's cnn-aug).
CNN_RECIPE = "cnn-aug"


# ---- The article's code as published: its model, loops and settings; only the prints are gone. ----
device = "cuda" if torch.cuda.is_available() else "cpu"


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear_1 = nn.Linear(28 * 28, 128)
        self.linear_2 = nn.Linear(128, 64)
        self.linear_3 = nn.Linear(64, 10)

    def forward(self, x):
        x = x.view(-1, 28 * 28)
        x = torch.relu(self.linear_1(x))
        x = torch.relu(self.linear_2(x))
        logits = self.linear_3(x)
        return logits


def train(dataloader, model, loss_fn, optimizer):
    total_loss, total_correct = 0, 0
    for x, y in dataloader:
        x, y = x.to(device), y.to(device)
        y_pred = model(x)
        loss = loss_fn(y_pred, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
        total_correct += (y_pred.argmax(1) == y).sum().item()
    return total_correct / len(dataloader.dataset), total_loss / len(dataloader)


def test(dataloader, model, loss_fn):
    total_loss, total_correct = 0, 0
    with torch.no_grad():
        for x, y in dataloader:
            x, y = x.to(device), y.to(device)
            y_pred = model(x)
            loss = loss_fn(y_pred, y)
            total_loss += loss.item()
            total_correct += (y_pred.argmax(1) == y).sum().item()
    return total_correct / len(dataloader.dataset), total_loss / len(dataloader)


def article_loaders(root: str):
    train_dataset = torchvision.datasets.MNIST(root, train=True, transform=ToTensor(), download=True)
    test_dataset = torchvision.datasets.MNIST(root, train=False, transform=ToTensor(), download=True)
    train_dataloader = torch.utils.data.DataLoader(train_dataset, batch_size=64, shuffle=True)
    test_dataloader = torch.utils.data.DataLoader(test_dataset, batch_size=64)
    return train_dataloader, test_dataloader


def article_epochs(loaders, epochs: int, seed: int):
    """The article's fit(): train then test, each epoch. Yields (seconds, test accuracy, test loss)."""
    torch.manual_seed(seed)
    model = Model().to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    for _ in range(epochs):
        started = time.perf_counter()
        train(loaders[0], model, loss_fn, optimizer)
        test_acc, test_loss = test(loaders[1], model, loss_fn)
        yield time.perf_counter() - started, test_acc, test_loss


# ---- end of the article's code ----


def our_epochs(params: Params, data, seed: int, epochs: int | None = None, plain: bool = False):
    """This project's loop (engine.fit, as the train stage runs it). Yields like article_epochs. `plain`:
    the model as a plain PyTorch loop trains it: fp32, NCHW tensors (the CNN's layout), autograd."""
    train_cfg = dataclasses.replace(params.train, epochs=epochs or params.train.epochs)
    if plain:
        train_cfg = dataclasses.replace(train_cfg, precision="fp32")
    params = dataclasses.replace(params, seed=seed, train=train_cfg)
    training = engine.Training.create(params, len(data[0]), data[0].labels.device)
    if plain and isinstance(training.model, CNN):
        training.model.memory_format = torch.contiguous_format
        training.model.to(memory_format=torch.contiguous_format)
    started = time.perf_counter()
    for record in engine.fit(training, data[0], data[1], params.train, split="test"):
        yield time.perf_counter() - started, record["test_accuracy"], record["test_loss"]
        started = time.perf_counter()


def with_overrides(params_path: Path, overrides: dict) -> Params:
    """params.yaml with `dvc exp run -S key=value` style overrides applied, validated as usual."""
    return with_values(yaml.safe_load(params_path.read_text()), overrides, f"{params_path} with overrides")


def torchvision_root(data_dir: Path, workdir: Path) -> str:
    """torchvision's folder layout, holding our verified files decompressed: it downloads nothing."""
    raw = workdir / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in data_dir.glob("*-ubyte.gz"):
        (raw / gz.name.removesuffix(".gz")).write_bytes(gzip.decompress(gz.read_bytes()))
    return str(workdir)


def matmul_rate(seconds: float = 0.5, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of the dominant matmul of the article's step (batch 64 through the first layer)."""
    a, b = torch.randn(64, 784, device=device, dtype=dtype), torch.randn(784, 128, device=device, dtype=dtype)
    for _ in range(10):
        a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * 64 * 784 * 128 * count / (time.perf_counter() - started)


def flops_per_epoch(hidden: tuple[int, ...], n_train: int, n_test: int) -> float:
    """Multiply-adds x 2 of one epoch: forward, backward (no input gradient for the first layer), test."""
    widths = [784, *hidden, 10]
    forward = sum(2 * a * b for a, b in itertools.pairwise(widths))
    backward = forward + sum(2 * a * b for a, b in itertools.pairwise(widths[1:]))
    return n_train * (forward + backward) + n_test * forward


def time_to_target(params: Params, data, seed: int, target: float) -> tuple[float, float, list]:
    """Train to the end; return seconds until test accuracy first reached `target` (nan if never),
    the final accuracy, and the (elapsed, accuracy) curve."""
    elapsed, reached, curve = 0.0, math.nan, []
    for seconds, accuracy, _ in our_epochs(params, data, seed):
        elapsed += seconds
        curve.append((elapsed, accuracy))
        if accuracy >= target and math.isnan(reached):
            reached = elapsed
    return reached, curve[-1][1], curve


def cnn_epochs(params: Params, data, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of one epoch of the CNN recipe in our loop and in the plain one, interleaved `repeats`
    times, after a few batches of each (oneDNN prepares its kernels on first use)."""
    size = params.train.batch_size
    for plain in (True, False):
        list(our_epochs(params, (data[0].head(3 * size), data[1].head(size)), 0, epochs=1, plain=plain))
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for timed, plain in zip(times, (False, True), strict=True):
            timed.append(next(our_epochs(params, data, 0, epochs=1, plain=plain))[0])
    return times


def spread_agrees(a: list[float], b: list[float]) -> tuple[bool, float, float]:
    """Do two sets of final losses agree within their seed-to-seed noise? (3 sigma of the difference.)"""
    gap = abs(statistics.mean(a) - statistics.mean(b))
    if len(a) < 2:
        return gap <= 0.05 * statistics.mean(a), gap, 0.05 * statistics.mean(a)
    bound = 3 * math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) + 1e-3
    return gap <= bound, gap, bound


def plot_curves(curves: dict[str, list], path: Path, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, curve in curves.items():
        ax.plot([0] + [t for t, _ in curve], [0.1] + [a for _, a in curve], marker="o", ms=3, label=label)
    ax.axhline(target, color="gray", ls="--", lw=1, label=f"{target:.1%}")
    ax.set(
        xlabel="wall-clock seconds of training",
        ylabel="test accuracy",
        ylim=(0, 1),
        title="Test accuracy against training time (same machine, same run)",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    gpu = f", GPU {torch.cuda.get_device_name()}" if device == "cuda" else ""
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} on {device} ({torch.get_num_threads()} threads){gpu}"
    )


def busy_loop() -> subprocess.Popen:
    """Another program keeping one core busy, as a second job on a shared machine does."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def two_at_once(args: argparse.Namespace) -> list[float]:
    """Our epoch times (median of each) in two training processes running at the same time."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--data",
        str(args.data),
        "--params",
        str(args.params),
        "--epochs",
        str(args.epochs),
    ]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    return [statistics.median(json.loads(w.communicate()[0].splitlines()[-1])) for w in workers]


def worker(args: argparse.Namespace) -> int:
    """One training process of two_at_once: a warm-up epoch, then timed ones, as JSON."""
    compute.setup()
    data = (load_split(args.data, train=True), load_split(args.data, train=False))
    params = with_overrides(args.params, {})
    list(our_epochs(params, data, seed=0, epochs=1))
    print(json.dumps([seconds for seconds, _, _ in our_epochs(params, data, seed=0, epochs=args.epochs)]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/mnist"), help="folder of the raw MNIST files")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per repetition")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (seeds 0..N-1) of each loop")
    parser.add_argument("--tuned-repeats", type=int, default=3)
    parser.add_argument("--cnn-repeats", type=int, default=2, help="epochs of the CNN recipe, each way")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="folder for the plot")
    parser.add_argument("--target", type=float, default=TARGET, help="test accuracy the tuned run is timed to")
    parser.add_argument(
        "--inference-calls", type=int, default=runtimes.CALLS, help="timed one-image calls of each runtime"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    article_params = with_overrides(args.params, {})
    recipe = recipes.recipe(args.params.resolve().parent, TUNED_RECIPE)  # conf/ lies beside params.yaml
    tuned_params = with_overrides(args.params, dotted(recipe))
    default_threads = torch.get_num_threads()  # the article's loop runs as published, on torch's default
    dev = compute.setup()  # as the train stage sets up: its thread count, deterministic kernels on CUDA
    print(
        f"machine: {machine()}; the article's loop on {default_threads} threads, ours on {compute.THREADS}", flush=True
    )
    data = (load_split(args.data, train=True).to(dev), load_split(args.data, train=False).to(dev))
    n_train, n_test = len(data[0]), len(data[1])

    def article(epochs: int, seed: int):
        torch.set_num_threads(default_threads)
        yield from article_epochs(loaders, epochs, seed)

    def ours(epochs: int, seed: int):
        torch.set_num_threads(compute.THREADS)
        yield from our_epochs(article_params, data, seed, epochs)

    with tempfile.TemporaryDirectory() as tmp:
        loaders = article_loaders(torchvision_root(args.data, Path(tmp)))
        # Warm-up: first-touch costs (page faults, kernels, caches) are not a loop's speed.
        list(article(1, seed=0))
        list(ours(1, seed=0))

        times = {"article": [], "ours": []}
        final_loss = {"article": [], "ours": []}
        curves = {}
        for seed in range(args.repeats):
            for name, epochs in (("article", article(args.epochs, seed)), ("ours", ours(args.epochs, seed))):
                elapsed, curve = 0.0, []
                for seconds, accuracy, loss in epochs:  # noqa: B007 (the last epoch's loss is read below)
                    times[name].append(seconds)
                    elapsed += seconds
                    curve.append((elapsed, accuracy))
                final_loss[name].append(loss)
                curves.setdefault(name, curve)
                print(
                    f"  {name:7s} seed {seed}: {[round(s, 2) for s in times[name][-args.epochs :]]} s/epoch, "
                    f"test loss {loss:.4f}",
                    flush=True,
                )

    article_s, ours_s = statistics.median(times["article"]), statistics.median(times["ours"])
    speedup = article_s / ours_s
    rate = matmul_rate()  # on the thread count our loop uses
    floor = flops_per_epoch(article_params.model.hidden, n_train, n_test) / rate
    agree, gap, bound = spread_agrees(final_loss["article"], final_loss["ours"])
    print(f"article loop : median {article_s:.3f} s/epoch, {n_train / article_s:,.0f} samples/s")
    print(f"this project : median {ours_s:.3f} s/epoch, {n_train / ours_s:,.0f} samples/s")
    print(f"speedup      : {speedup:.1f}x ({args.epochs} epochs x {args.repeats} repeats each, after a warm-up)")
    print(
        f"compute floor: {floor * rate / 1e9:.1f} GFLOP/epoch at {rate / 1e9:.0f} GFLOP/s (batch-64 matmul, "
        f"{compute.THREADS} thread) = {floor:.3f} s/epoch; this project is at {ours_s / floor:.2f}x the floor"
    )
    # The floor of the fastest arithmetic here; the article's run stays fp32, so this is for the record.
    native = compute.native_bf16(dev)
    fastest = matmul_rate(dtype=torch.bfloat16) if native else rate
    fast_floor = floor * rate / fastest
    print(
        f"bf16 floor   : {fastest / 1e9:.0f} GFLOP/s in bf16 = {fast_floor:.3f} s/epoch; the article's MLP (fp32) "
        f"at {ours_s / fast_floor:.2f}x it"
        if native
        else "bf16 floor   : no native bf16 here; the fastest floor is fp32's"
    )
    print(
        f"final test loss after {args.epochs} epochs: article {statistics.mean(final_loss['article']):.4f}, "
        f"ours {statistics.mean(final_loss['ours']):.4f}, gap {gap:.4f} "
        f"{'<=' if agree else '>'} {bound:.4f} (3 sigma of seed noise): {'agree' if agree else 'DISAGREE'}"
    )

    busy = busy_loop()
    try:
        contended = statistics.median(s for s, _, _ in ours(args.epochs, seed=0))
    finally:
        busy.kill()
        busy.wait()
    print(
        f"busy machine : median {contended:.3f} s/epoch while another process spins on a core: "
        f"{contended / ours_s:.2f}x alone",
        flush=True,
    )
    pair = two_at_once(args)
    print(
        f"two at once  : medians {pair[0]:.3f} and {pair[1]:.3f} s/epoch in two training processes: "
        f"{statistics.mean(pair) / ours_s:.2f}x alone",
        flush=True,
    )

    runs = [time_to_target(tuned_params, data, seed=0, target=args.target) for _ in range(args.tuned_repeats)]
    tuned_seconds = statistics.median(r[0] for r in runs)
    tuned_accuracy = runs[0][1]
    curves["tuned"] = runs[0][2]
    print(f"tuned        : recipe {TUNED_RECIPE}: dvc exp run -n {TUNED_RECIPE} -S experiment={TUNED_RECIPE}")
    print(
        f"tuned        : test accuracy {tuned_accuracy:.4f}; reached {args.target} after {tuned_seconds:.1f} s "
        f"of training (median of {args.tuned_repeats})"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    plot_curves(
        {
            "article's loop, article settings": curves["article"],
            "this project, article settings": curves["ours"],
            "this project, tuned": curves["tuned"],
        },
        args.out / "accuracy_vs_time.png",
        args.target,
    )
    print(f"plot         : {args.out / 'accuracy_vs_time.png'}")

    cnn_params = with_overrides(args.params, dotted(recipes.recipe(args.params.resolve().parent, CNN_RECIPE)))
    cnn, plain = (statistics.median(t) for t in cnn_epochs(cnn_params, data, args.cnn_repeats))
    precision = compute.precision(cnn_params.train.precision, dev)
    print(
        f"{CNN_RECIPE}      : one epoch of {n_train:,} images: {cnn:.1f} s in our loop ({precision}, "
        f"channels_last), {plain:.1f} s as plain fp32 NCHW autograd: {plain / cnn:.2f}x "
        f"(median of {args.cnn_repeats}, interleaved)"
    )
    served = runtimes.report(article_params.model, args.inference_calls)
    print(
        f"speedup={speedup:.2f} tuned_accuracy={tuned_accuracy:.4f} tuned_seconds={tuned_seconds:.2f} "
        f"floor_ratio={ours_s / floor:.2f} contended_ratio={contended / ours_s:.2f} "
        f"parallel_ratio={statistics.mean(pair) / ours_s:.2f} article_epoch_seconds={article_s:.2f} "
        f"cnn_epoch_seconds={cnn:.2f} cnn_speedup={plain / cnn:.2f} bf16_floor_ratio={ours_s / fast_floor:.2f} "
        + " ".join(f"{k}={v}" for k, v in served.items())
    )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
