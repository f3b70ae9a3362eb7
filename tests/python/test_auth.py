"""Access control through the dots-server binary and the Python client: mutual TLS and tokens.

Certificates are made by the openssl CLI in a temporary directory. The full RPC x token x
transport matrix is tests/server/auth_test.cc; this checks the flags of the binary and the
Python client's TLS and token options end to end.
"""

import os
import shutil
import subprocess
import tempfile

import pytest

import dots_client
import tiny_grpo  # examples/tiny_grpo, on the path through conftest
from conftest import running_server

ADMIN_TOKEN = "python-admin-token-7c1e9a"


def _openssl(directory: str, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def _leaf(directory: str, name: str, cn: str, extensions: str) -> None:
    _openssl(directory, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
    with open(os.path.join(directory, f"{name}.ext"), "w") as f:
        f.write(extensions)
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey",
             "ca.key", "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile",
             f"{name}.ext")


@pytest.fixture(scope="module")
def pki():
    directory = tempfile.mkdtemp(prefix="dots-pki-")
    _openssl(directory, "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=dots-test-ca", "-addext",
             "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    _leaf(directory, "server", "localhost",
          "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _leaf(directory, "client", "dots-trainer", "extendedKeyUsage=clientAuth\n")
    with open(os.path.join(directory, "admin.token"), "w") as f:
        f.write(ADMIN_TOKEN + "\n")  # the trailing newline is ignored
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _start(args):
    binary = os.environ["DOTS_SERVER_BIN"]
    return subprocess.Popen([binary, "--listen=127.0.0.1:0", "--metrics_listen=", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def mtls_server(pki):
    p = lambda name: os.path.join(pki, name)  # noqa: E731
    yield from running_server("dots-pytest-auth-", f"--admin_token_file={p('admin.token')}",
                              f"--tls_cert_file={p('server.pem')}",
                              f"--tls_key_file={p('server.key')}",
                              f"--tls_client_ca_file={p('ca.pem')}")


def _client(address, pki, token=None, cert=True):
    p = lambda name: os.path.join(pki, name)  # noqa: E731
    return dots_client.Client(address, token=token, timeout=10.0, max_attempts=1,
                              ca_file=p("ca.pem"),
                              cert_file=p("client.pem") if cert else None,
                              key_file=p("client.key") if cert else None)


def test_tokens_over_mutual_tls(mtls_server, pki):
    with _client(mtls_server, pki, ADMIN_TOKEN) as admin:
        a = admin.create_run("a", {})
        b = admin.create_run("b", {})
        assert a["token"].startswith("dots_") and b["token"].startswith("dots_")
        assert a["token"] != b["token"]
        assert "token" not in admin.get_run("a"), "only create_run returns the token"
        assert [r["run_id"] for r in admin.list_runs()] == ["a", "b"]
    with _client(mtls_server, pki, a["token"]) as owner:
        assert owner.stats("a")["pool_size"] == 0
        with pytest.raises(dots_client.DotsError) as e:
            owner.stats("b")
        assert e.value.code == "PERMISSION_DENIED"
        with pytest.raises(dots_client.DotsError) as e:
            owner.list_runs()
        assert e.value.code == "PERMISSION_DENIED"
    for token in (None, "dots_" + "y" * 43):
        with _client(mtls_server, pki, token) as stranger:
            with pytest.raises(dots_client.DotsError) as e:
                stranger.get_run("a")
            assert e.value.code == "UNAUTHENTICATED"


def test_mutual_tls_requires_a_client_certificate(mtls_server, pki):
    with _client(mtls_server, pki, ADMIN_TOKEN, cert=False) as anonymous:
        with pytest.raises(dots_client.DotsError) as e:
            anonymous.list_runs()
        assert e.value.code == "UNAVAILABLE"


def test_server_refuses_tokens_without_tls(pki):
    token_file = os.path.join(pki, "admin.token")
    refused = _start(["--state_dir=", f"--admin_token_file={token_file}"])
    out, err = refused.communicate(timeout=30)
    assert refused.returncode == 2
    assert "--allow_insecure_tokens" in err
    allowed, address = tiny_grpo.start_server(
        os.environ["DOTS_SERVER_BIN"], "",
        [f"--admin_token_file={token_file}", "--allow_insecure_tokens"])
    try:
        with dots_client.Client(address, token=ADMIN_TOKEN, timeout=10.0) as admin:
            assert admin.create_run("plain", {})["token"].startswith("dots_")
        with dots_client.Client(address, timeout=10.0, max_attempts=1) as anonymous:
            with pytest.raises(dots_client.DotsError) as e:
                anonymous.list_runs()
            assert e.value.code == "UNAUTHENTICATED"
    finally:
        assert tiny_grpo.stop_server(allowed) == 0
