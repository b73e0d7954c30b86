"""Load test of `make serve` on loopback: one-image requests from 1, 4 and 16 clients at once, each
sending its next request when the last is answered, the load generator in this process on the same
cores as the server. Bounded: a fixed time per step, a timeout per request.

    python bench/load.py                           # models/model.pt, or --model FILE / --model-uri URI
    python bench/load.py --runtime torch --body tensor --seconds 5

For each runtime (the server started once per runtime) and each body (the prepared pixels as MLflow's
tensor JSON, or a PNG as base64 in a one-column table): requests/s, p50, p99, errors, and the CPU
the server's processes and the load generator spent per request. The last line is machine-readable:
<runtime>_<body>_rps16= (16 clients), <runtime>_<body>_p99_4_ms= (4 clients), ..., errors= (all steps).
"""

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
from PIL import Image, ImageDraw

TIMEOUT_S = 10.0  # a request not answered by then counts as an error
START_WITHIN_S = 180.0


def bodies() -> dict[str, bytes]:
    """One digit (a 7 drawn with a pen, 200x200 px) as each kind of request the server takes."""
    from mnist_pipeline.data import preprocess

    page = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(page).line([(50, 35), (150, 35), (85, 175)], fill="black", width=14, joint="curve")
    png = io.BytesIO()
    page.save(png, "PNG")
    pixels = preprocess.from_bytes(png.getvalue()).round(4)[None, None]
    table = {"columns": ["image"], "data": [[base64.b64encode(png.getvalue()).decode()]]}
    return {
        "tensor": json.dumps({"inputs": pixels.tolist()}).encode(),
        "image": json.dumps({"dataframe_split": table}).encode(),
    }


def request(port: int, body: bytes) -> bytes:
    head = f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def client(port: int, message: bytes, until: float, latencies: list[float], errors: list[str]) -> None:
    """One keep-alive connection sending `message` again as soon as each answer is in."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        errors.append(f"connect: {exc}")
        return
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(message)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
            length = next(
                int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")
            )
            answer = await asyncio.wait_for(reader.readexactly(length), TIMEOUT_S)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200 ") or b'"predictions"' not in answer:
                errors.append(f"{head.split(b' ', 2)[1].decode()}: {answer[:200]!r}")
    except (OSError, TimeoutError, asyncio.IncompleteReadError, StopIteration) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()


def step(port: int, message: bytes, clients: int, seconds: float, server: psutil.Process) -> dict[str, float]:
    """`clients` at once for `seconds` (after a warm-up of a second): the figures of that step."""

    async def run(duration: float) -> tuple[list[float], list[str]]:
        latencies: list[float] = []
        errors: list[str] = []
        until = time.perf_counter() + duration
        await asyncio.gather(*(client(port, message, until, latencies, errors) for _ in range(clients)))
        return latencies, errors

    asyncio.run(run(1.0))
    cpu, mine, started = server_cpu(server), time.process_time(), time.perf_counter()
    latencies, errors = asyncio.run(run(seconds))
    elapsed = time.perf_counter() - started
    n = max(len(latencies), 1)
    p50, p99 = np.percentile(latencies or [0.0], [50, 99]) * 1000
    for error in sorted(set(errors))[:3]:
        print(f"  error: {error}", flush=True)
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": len(errors),
        "server_cpu_ms": (server_cpu(server) - cpu) * 1000 / n,
        "client_cpu_ms": (time.process_time() - mine) * 1000 / n,
    }


def server_cpu(server: psutil.Process) -> float:
    """CPU seconds (user + system) of the server and all its processes so far."""
    total = 0.0
    for process in [server, *server.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def start(options: list[str], runtime: str, log: Path) -> tuple[subprocess.Popen, int]:
    """`python -m mnist_pipeline.serve` with `options` on a free loopback port, once it answers /health."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "mnist_pipeline.serve", *options, "--host", "127.0.0.1", "--port", str(port)]
    if runtime != "torch":  # so that the script also measures a checkout from before --runtime
        command += ["--runtime", runtime]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + START_WITHIN_S
    while time.monotonic() < deadline and server.poll() is None:
        with contextlib.suppress(OSError), direct.open(f"http://127.0.0.1:{port}/health", timeout=2):
            return server, port
        time.sleep(0.25)
    stop(server)
    raise SystemExit(f"error: the server did not come up; its log:\n{log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (serve.py, uvicorn, its workers), SIGKILL after 15 s."""
    with contextlib.suppress(ProcessLookupError):  # gone already: it failed to start
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="checkpoint to serve (serve's default: the champion, else models/model.pt)")
    source.add_argument("--model-uri", help="an MLflow model to serve")
    parser.add_argument("--runtime", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    parser.add_argument("--body", nargs="+", default=["tensor", "image"], choices=["tensor", "image"])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=10.0, help="per step, after a second of warm-up")
    parser.add_argument("--log", type=Path, default=Path("serve-load.log"), help="the server's output")
    args = parser.parse_args(argv)
    options = ["--model", args.model] if args.model else ["--model-uri", args.model_uri] if args.model_uri else []
    print(f"load: {platform.node()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    print("runtime body   clients   req/s     p50 ms    p99 ms  errors  server CPU ms/req  client CPU ms/req")
    fields: dict[str, str] = {}
    errors = 0
    messages = bodies()
    for runtime in args.runtime:
        server, port = start(options, runtime, args.log)
        try:
            process = psutil.Process(server.pid)
            for body in args.body:
                for clients in args.clients:
                    r = step(port, request(port, messages[body]), clients, args.seconds, process)
                    errors += int(r["errors"])
                    print(
                        f"{runtime:7} {body:6} {clients:7} {r['rps']:9.0f} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f} "
                        f"{r['errors']:7} {r['server_cpu_ms']:18.2f} {r['client_cpu_ms']:18.2f}",
                        flush=True,
                    )
                    key = f"{runtime}_{body}"
                    fields[f"{key}_rps{clients}"] = f"{r['rps']:.0f}"
                    fields[f"{key}_p99_{clients}_ms"] = f"{r['p99_ms']:.2f}"
        finally:
            stop(server)
    print(" ".join([*(f"{k}={v}" for k, v in fields.items()), f"errors={errors}"]))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
