"""Shared pytest fixtures: one live dots-server (DOTS_SERVER_BIN) per test module.

Run by ctest (`python_client`), which sets PYTHONPATH to the generated stubs and the package:
    PYTHONPATH=BUILD/python:client/python DOTS_SERVER_BIN=BUILD/bin/dots-server \
        /usr/bin/python3 -m pytest -q tests/python
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import dots_client

# Test helpers (fake_verl) and the tiny_grpo example are imported by path.
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
for path in (HERE, os.path.join(REPO, "examples", "tiny_grpo")):
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture(scope="module")
def server():
    """A real dots-server on a free port, with its own state directory; yields "HOST:PORT".

    Stopped with SIGTERM after the module; the test fails if it does not exit 0.
    """
    binary = os.environ.get("DOTS_SERVER_BIN")
    if not binary:
        pytest.fail("DOTS_SERVER_BIN is not set (path of the dots-server binary)")
    state = tempfile.mkdtemp(prefix="dots-pytest-")
    process = subprocess.Popen(
        [
            binary,
            "--listen=127.0.0.1:0",
            "--metrics_listen=127.0.0.1:0",
            f"--state_dir={state}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break  # exited
        match = re.match(r"dots-server listening on (\S+:\d+)", line)
        if match:
            address = match.group(1)
            break
    if address is None:
        process.kill()
        _, err = process.communicate()
        shutil.rmtree(state, ignore_errors=True)
        pytest.fail(f"dots-server did not report its address; stderr:\n{err}")
    # Keep draining both pipes so the server never blocks on a full pipe.
    threading.Thread(target=process.stdout.read, daemon=True).start()
    threading.Thread(target=process.stderr.read, daemon=True).start()
    yield address
    process.terminate()
    try:
        assert process.wait(timeout=30) == 0, "dots-server did not exit 0 on SIGTERM"
    finally:
        if process.poll() is None:
            process.kill()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def client(server):
    with dots_client.Client(server, timeout=20.0) as c:
        yield c
