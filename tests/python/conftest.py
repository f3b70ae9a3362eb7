"""Shared pytest fixtures: one live dots-server (DOTS_SERVER_BIN) per test module.

Run by ctest (one `python_test_*` entry per file), which sets PYTHONPATH to the generated stubs and the package:
    PYTHONPATH=BUILD/python:client/python DOTS_SERVER_BIN=BUILD/bin/dots-server \
        /usr/bin/python3 -m pytest -q tests/python
"""

import os
import shutil
import sys
import tempfile

import pytest

import dots_client

# Test helpers (fake_verl) and the tiny_grpo example are imported by path.
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
for path in (HERE, os.path.join(REPO, "examples", "tiny_grpo")):
    if path not in sys.path:
        sys.path.insert(0, path)

import tiny_grpo  # noqa: E402  (examples/tiny_grpo: starts and stops dots-server)


def running_server(state_prefix, *flags):
    """Runs dots-server (DOTS_SERVER_BIN) with a state directory of its own and `flags`.

    A generator for fixtures: yields "HOST:PORT", then stops the server with SIGTERM and fails the
    test if it does not exit 0; the state directory is removed either way.
    """
    binary = os.environ.get("DOTS_SERVER_BIN")
    if not binary:
        pytest.fail("DOTS_SERVER_BIN is not set (path of the dots-server binary)")
    state = tempfile.mkdtemp(prefix=state_prefix)
    try:
        try:
            process, address = tiny_grpo.start_server(binary, state, flags)
        except RuntimeError as e:
            pytest.fail(str(e))
        yield address
        assert tiny_grpo.stop_server(process) == 0, "dots-server did not exit 0 on SIGTERM"
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    """A real dots-server on a free port, with its own state directory; yields "HOST:PORT".

    Stopped with SIGTERM after the module; the test fails if it does not exit 0.
    """
    yield from running_server("dots-pytest-")


@pytest.fixture(scope="module")
def client(server):
    with dots_client.Client(server, timeout=20.0) as c:
        yield c
