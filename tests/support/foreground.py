"""Ctrl-C reaches the programs the tests start, as it reaches a command typed in a terminal."""

import signal


def pytest_configure() -> None:
    # A background job (`make test &`, some CI runners) starts with SIGINT ignored, and its children
    # inherit that: every Ctrl-C a test sends would be lost. A handler here is reset to the default
    # in each child at exec, so the programs take SIGINT as they would in a terminal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
