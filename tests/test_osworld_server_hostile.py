"""Our OSWorld-protocol server against hostile input (issue 18, 2.2, 2.4, 2.5): non-finite numbers,
slow clients, bodies that break parsers, uploads that fail. A real server on loopback serving a real
Xvfb sandbox; raw sockets where the bytes on the wire are the point."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from env.osworld_client import OSWorldClient, Reply
from env.osworld_server import RunningServer, ServerConfig, start_server
from env.sandbox import Sandbox

pytestmark = pytest.mark.x11
REPO = Path(__file__).resolve().parent.parent

# Every route that takes a JSON body (the others take a form, or nothing).
JSON_ROUTES = [
    ("POST", "/execute"),
    ("POST", "/setup/execute"),
    ("POST", "/setup/launch"),
    ("POST", "/setup/open_file"),
    ("POST", "/setup/download_file"),
    ("POST", "/setup/activate_window"),
    ("POST", "/setup/close_window"),
    ("POST", "/list_directory"),
    ("POST", "/desktop_path"),
    ("POST", "/run_python"),
    ("POST", "/run_bash_script"),
    ("POST", "/screen_size"),
    ("POST", "/kimi/act"),
    ("POST", "/kimi/release"),
    ("GET", "/platform"),
]


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    with Sandbox(640, 400, desktop="minimal", isolation=None) as b:
        yield b


@pytest.fixture(scope="module")
def server(box: Sandbox) -> Iterator[RunningServer]:
    with start_server(ServerConfig(display=box.display, env=box.env, bash_max_timeout_s=1)) as s:
        yield s


@pytest.fixture
def client(server: RunningServer) -> Iterator[OSWorldClient]:
    with OSWorldClient(server.url, token=server.token) as c:
        yield c


def _raw_json(c: OSWorldClient, method: str, path: str, body: bytes) -> Reply:
    return c.request(method, path, content=body, content_type="application/json", timeout_s=60)


def _error(r: Reply) -> str:
    """The message of a JSON error reply; fails on anything else (an HTML page above all)."""
    assert r.headers.get("content-type", "").startswith("application/json"), (r.status, r.text[:200])
    body = r.json()
    assert isinstance(body, dict) and body.get("status") == "error", r.text[:200]
    return str(body["message"])


# -- 2.2: non-finite numbers -------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_every_json_route_refuses_a_non_finite_number_naming_it(
    server: RunningServer, client: OSWorldClient, box: Sandbox, method: str, path: str
) -> None:
    marker = box.home / "non-finite-ran"
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        body = (
            b'{"command": "touch ~/non-finite-ran", "shell": true, "script": "touch ~/non-finite-ran",'
            b' "code": "open(\'%s\', \'w\')", "path": "~", "window_name": "x",'
            b' "limits": {"steps": [1, 2, %s]}, "timeout": 5}' % (str(marker).encode(), literal)
        )
        r = _raw_json(client, method, path, body)
        assert r.status == 400, (path, literal, r.status, r.text[:200])
        shown = "Infinity" if literal == b"1e999" else literal.decode()
        assert _error(r) == f"limits.steps[2] must be a finite number, not {shown}"
    assert not marker.exists()


def test_run_bash_script_nan_timeout_is_a_400_and_the_cap_always_applies(
    client: OSWorldClient, box: Sandbox
) -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        r = _raw_json(client, "POST", "/run_bash_script", b'{"script": "sleep 30", "timeout": %s}' % literal)
        assert r.status == 400 and "timeout must be a finite number" in _error(r), r.text
    for bad in (b"0", b"-1", b'"5"', b"true", b"null"):
        r = _raw_json(client, "POST", "/run_bash_script", b'{"script": "true", "timeout": %s}' % bad)
        assert r.status == 400 and "timeout must be a positive number" in r.json()["output"], r.text
    # The server's cap is 1 s here: any finite timeout above it, a float's largest or an integer too
    # large for a float, still stops the script after 1 s.
    for big in (b"1e308", b"1" + b"0" * 400):
        t0 = time.monotonic()
        r = _raw_json(client, "POST", "/run_bash_script", b'{"script": "sleep 30", "timeout": %s}' % big)
        assert (r.status, r.json()["output"]) == (500, "Script execution timed out after 1 seconds")
        assert time.monotonic() - t0 < 20


def test_kimi_act_numbers_are_finite_and_in_range(client: OSWorldClient) -> None:
    move = b'{"kind": "move", "point": {"x": %s, "y": 10, "space": "pixel"}}'
    r = _raw_json(client, "POST", "/kimi/act", b'{"action": %s}' % (move % b"NaN"))
    assert r.status == 400 and _error(r) == "action.point.x must be a finite number, not NaN"
    ok = move % b"10"
    r = _raw_json(client, "POST", "/kimi/act", b'{"action": %s, "settle": {"timeout_s": Infinity}}' % ok)
    assert r.status == 400 and _error(r) == "settle.timeout_s must be a finite number, not Infinity"
    for settle in (
        b'{"timeout_s": 31}',
        b'{"timeout_s": -1}',
        b'{"interval_s": 0}',
        b'{"interval_s": 1e9}',
        b'{"quiet_s": "0.1"}',
        b'{"quiet_s": false}',
    ):
        r = _raw_json(client, "POST", "/kimi/act", b'{"action": %s, "settle": %s}' % (ok, settle))
        assert r.status == 400 and "must be a number in" in r.json()["error"], (settle, r.text)
    r = _raw_json(client, "POST", "/kimi/act", b'{"action": %s, "settle": {"interval_s": 0.01}}' % ok)
    assert r.status == 200 and r.json()["ok"], r.text


# -- 2.5: every error is JSON ------------------------------------------------------------------------
def test_every_error_is_json_never_an_html_page(server: RunningServer, client: OSWorldClient) -> None:
    r = _raw_json(client, "POST", "/execute", b"[" * 100_000)
    assert r.status == 400 and _error(r) == "the body is not valid JSON: it is nested too deep"
    r = _raw_json(client, "POST", "/execute", b'{"a":' * 100_000)
    assert r.status == 400 and "nested too deep" in _error(r)
    r = _raw_json(client, "POST", "/execute", b"{")
    assert r.status == 400 and _error(r).startswith("the body is not valid JSON: Expecting property name")
    r = _raw_json(client, "POST", "/execute", b"[1, 2]")
    assert r.status == 400 and _error(r) == "the body must be a JSON object, not list"
    r = _raw_json(client, "POST", "/execute", b"\xff\xfe junk")
    assert r.status == 400 and "not valid JSON" in _error(r)
    r = client.request("GET", "/no/such/route")
    assert r.status == 404 and "not found" in _error(r).lower()
    r = client.request("GET", "/execute")
    assert r.status == 405 and "not allowed" in _error(r).lower() and "POST" in r.headers["allow"]
    r = client.request("POST", "/execute", content=b"x" * (2 * 1024 * 1024), content_type="text/plain")
    assert r.status == 413 and "byte limit" in _error(r)
    with OSWorldClient(server.url) as anon:
        r = anon.request("GET", "/platform")
    assert r.status == 401 and "token" in _error(r) and r.headers["www-authenticate"].startswith("Basic")


def test_an_unforeseen_failure_is_a_json_500(box: Sandbox) -> None:
    # A display that is not there: the first screen request fails in the X library, not in our code.
    with (
        start_server(ServerConfig(display=":4077", env=box.env)) as s,
        OSWorldClient(s.url, token=s.token) as c,
    ):
        r = c.request("POST", "/screen_size")
        assert r.status == 500 and _error(r).startswith("internal error in /screen_size: "), r.text
