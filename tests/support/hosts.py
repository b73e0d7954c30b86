"""Two machines for tests: network namespaces joined by a veth pair (as root, with iproute2's `ip`)."""

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

Hosts = dict[str, tuple[str, str, str]]  # "a"/"b" -> (namespace, veth device, address)


def _can_make_namespaces() -> str | None:
    if not shutil.which("ip"):
        return "needs iproute2's `ip`"
    probe = f"mnist-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces are not allowed here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=True)
    return None


@contextlib.contextmanager
def network_namespaces(subnet: str) -> Iterator[Hosts]:
    """Namespaces a ({subnet}.1) and b ({subnet}.2) linked by a veth pair; skips where they cannot be made."""
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:6]
    hosts = {"a": (f"mnist-a-{tag}", f"va{tag}", f"{subnet}.1"), "b": (f"mnist-b-{tag}", f"vb{tag}", f"{subnet}.2")}

    def run(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True)

    try:
        for ns, _, _ in hosts.values():
            run("ip", "netns", "add", ns)
        run("ip", "link", "add", hosts["a"][1], "type", "veth", "peer", "name", hosts["b"][1])
        for ns, veth, address in hosts.values():
            run("ip", "link", "set", veth, "netns", ns)
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", veth)
            run("ip", "-n", ns, "link", "set", veth, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        yield hosts
    finally:
        for ns, _, _ in hosts.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def two_hosts() -> Iterator[Hosts]:
    """Namespaces a (10.231.7.1) and b (10.231.7.2) linked by veth-a <-> veth-b; yields their names."""
    with network_namespaces("10.231.7") as hosts:
        yield hosts
