"""What must not take the server down or let a stranger in: basic auth, the host refusal, a full queue (503 with
Retry-After), a job that raises (500, one line), a client that goes away mid-job. Servers here run in this process
(uvicorn in a thread) so a test can make the model fail or wait."""
from __future__ import annotations

import base64
import dataclasses
import json
import threading
import time

import pytest
import requests
import uvicorn

from nanoldm.cli.__main__ import main as cli_main
from nanoldm.pipelines.infotext import read_png_infotext
from nanoldm.server.app import create_app
from nanoldm.server.auth import check_credentials
from nanoldm.server.service import Service
from nanoldm.server.settings import ServerSettings, is_loopback, parse_api_auth
from tests.server.conftest import SMALL, free_port

USERS = (("ann", "s3cret:with colon"), ("bob", "pw"))


class InProcess:
    def __init__(self, **settings):
        self.service = Service(ServerSettings(port=free_port(), **settings))
        port = self.service.settings.port
        self.url = f"http://127.0.0.1:{port}/sdapi/v1"
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.service), host="127.0.0.1", port=port,
                                                    log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def guarded():
    running = InProcess(api_auth=USERS, queue_size=0)
    yield running
    running.stop()


@pytest.mark.parametrize("auth", [None, ("ann", "wrong"), ("nobody", "pw"), ("bob", "s3cret:with colon"), ("", "")])
def test_every_route_needs_a_known_user_and_says_the_same_to_all_others(guarded, auth):
    for route in ("/sdapi/v1/progress", "/sdapi/v1/sd-models", "/docs", "/", "/openapi.json"):
        response = requests.get(guarded.url.removesuffix("/sdapi/v1") + route, auth=auth, timeout=30)
        assert response.status_code == 401 and response.json() == {"detail": "Incorrect username or password"}
        assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_known_users_get_in(guarded):
    for user in USERS:
        assert requests.get(f"{guarded.url}/progress", auth=user, timeout=30).status_code == 200


def test_credentials_are_checked_whole():
    header = b"Basic " + base64.b64encode(b"ann:s3cret:with colon")
    assert check_credentials(header, USERS)
    assert not check_credentials(b"Basic " + base64.b64encode(b"ann:s3cret"), USERS)
    assert not check_credentials(b"Bearer x", USERS) and not check_credentials(None, USERS)
    assert parse_api_auth("ann:s3cret:with colon,bob:pw") == USERS
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        parse_api_auth("ann")


def test_a_full_queue_is_503_with_retry_after_and_a_failing_job_500(guarded, monkeypatch):
    release, started = threading.Event(), threading.Event()
    real = guarded.service.pipe.generate

    def slow(*args, **kwargs):
        started.set()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(guarded.service.pipe, "generate", slow)
    first: dict = {}
    job = threading.Thread(target=lambda: first.setdefault(
        "r", requests.post(f"{guarded.url}/txt2img", json={**SMALL, "steps": 1}, auth=USERS[1], timeout=600)))
    job.start()
    assert started.wait(60)
    busy = requests.post(f"{guarded.url}/txt2img", json=SMALL, auth=USERS[1], timeout=60)
    assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1 and "queue is full" in busy.text
    release.set()
    job.join(600)
    assert first["r"].status_code == 200

    def broken(*args, **kwargs):
        raise RuntimeError("the UNet\nfell over")

    monkeypatch.setattr(guarded.service.pipe, "generate", broken)
    failed = requests.post(f"{guarded.url}/txt2img", json=SMALL, auth=USERS[1], timeout=60)
    assert failed.status_code == 500 and failed.json()["detail"] == "RuntimeError: the UNet fell over"
    monkeypatch.setattr(guarded.service.pipe, "generate", real)
    assert requests.post(f"{guarded.url}/txt2img", json={**SMALL, "steps": 1}, auth=USERS[1],
                         timeout=600).status_code == 200


def test_a_client_that_goes_away_mid_job_does_not_stop_the_server(guarded):
    with pytest.raises(requests.exceptions.Timeout):
        requests.post(f"{guarded.url}/txt2img", json={**SMALL, "steps": 40}, auth=USERS[0], timeout=0.5)
    deadline = time.monotonic() + 600
    while guarded.service.queue.pending and time.monotonic() < deadline:
        time.sleep(0.1)
    assert requests.post(f"{guarded.url}/txt2img", json={**SMALL, "steps": 1}, auth=USERS[0],
                         timeout=600).status_code == 200


@pytest.mark.parametrize("argv, words", [
    (["--host", "0.0.0.0"], "refusing to serve on 0.0.0.0"),
    (["--host", "192.168.1.5", "--api-auth", "nopassword"], "USER:PASSWORD"),
    (["--queue-size", "-1"], "queue size"),
    (["--models-dir", "/nonexistent/models"], "no such folder"),
])
def test_the_command_refuses_unsafe_or_impossible_settings(capsys, argv, words):
    assert cli_main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


def test_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("example.org")
    ServerSettings(host="0.0.0.0", insecure=True).check()
    ServerSettings(host="0.0.0.0", api_auth=USERS).check()


def test_outputs_are_saved_only_with_a_save_dir(guarded, monkeypatch, tmp_path):
    body = {**SMALL, "steps": 1}
    assert requests.post(f"{guarded.url}/txt2img", json=body, auth=USERS[0], timeout=600).status_code == 200
    assert not list(tmp_path.iterdir())
    monkeypatch.setattr(guarded.service, "settings", dataclasses.replace(guarded.service.settings, save_dir=tmp_path))
    response = requests.post(f"{guarded.url}/txt2img", json=body, auth=USERS[0], timeout=600)
    [saved] = tmp_path.glob("*.png")
    assert saved.name == "00000-7.png" and json.loads(response.json()["info"])["infotexts"] == [read_png_infotext(saved)]

