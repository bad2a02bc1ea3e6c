"""`edge-tl serve` answered over real HTTP (a Unix socket, so no TCP port is needed): good,
malformed, oversized and concurrent requests, the token, the metadata's privacy, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from test_export import tiny_model
from tinydata import popen_child

from edge_tl.deploy.predict import Classifier
from edge_tl.deploy.serve import Limits, is_loopback, make_app, read_token
from edge_tl.errors import ConfigError

TEXTS = ["great fun, loved it", "boring and bad", "a fine film"]
TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    from edge_tl.deploy.export import export_onnx

    return export_onnx(
        tiny_model(seed=5, n_class=2), tmp_path_factory.mktemp("m") / "s.onnx", vocab="full"
    )


def _wait_for(sock: Path, seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while not sock.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"{sock} did not appear")
        time.sleep(0.05)


class Server:
    """uvicorn serving `app` on a Unix socket in a thread, for one test module."""

    def __init__(self, app, sock: Path) -> None:  # noqa: ANN001
        self.sock = sock
        config = uvicorn.Config(app, uds=str(sock), log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        _wait_for(self.sock)
        transport = httpx.HTTPTransport(uds=str(self.sock))
        self.client = httpx.Client(transport=transport, base_url="http://edge-tl", timeout=20)
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture(scope="module")
def served(onnx_path, tmp_path_factory):
    clf = Classifier(onnx_path)
    limits = Limits(max_body_bytes=64 * 1024, max_batch=8, max_text_chars=5_000, workers=2)
    sock = tmp_path_factory.mktemp("sock") / "s.sock"
    with Server(make_app(clf, None, limits), sock) as client:
        yield client, clf


def test_one_text_and_a_batch(served) -> None:
    client, clf = served
    r = client.post("/predict", json={"text": TEXTS[0]})
    assert r.status_code == 200
    want = clf.classify(TEXTS)
    assert r.json() == {"label": want[0].label, "probs": pytest.approx(want[0].probs, abs=1e-6)}
    r = client.post("/predict", json={"texts": TEXTS})
    got = r.json()["predictions"]
    assert [g["label"] for g in got] == [w.label for w in want]
    assert client.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not JSON"),
        (b"\xff\xfe", 400, "not JSON"),
        (b'{"text": 5}', 422, "text 1 is not a non-empty string"),
        (b'{"text": "  "}', 422, "text 1 is not a non-empty string"),
        (b'{"texts": []}', 422, "non-empty list"),
        (b'{"text": "a", "texts": ["b"]}', 422, "send"),
        (b"[1, 2]", 422, "send"),
        (json.dumps({"texts": ["x"] * 9}).encode(), 413, "at most 8"),
        (json.dumps({"text": "x" * 5_001}).encode(), 413, "longer than 5000"),
        (b" " * (64 * 1024 + 1), 413, "over 65536 bytes"),
    ],
)
def test_bad_requests_get_a_4xx_and_the_server_lives_on(served, body, status, says) -> None:
    client, _ = served
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and says in r.json()["error"]
    assert client.post("/predict", json={"text": "fine"}).status_code == 200


def test_wrong_method_and_path(served) -> None:
    client, _ = served
    assert client.get("/predict").status_code == 405
    assert client.get("/nope").status_code == 404


def test_concurrent_requests_all_answer_right(served) -> None:
    client, clf = served
    want = clf.predict(TEXTS)

    def one(i: int) -> str:
        return client.post("/predict", json={"text": TEXTS[i % 3]}).json()["label"]

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, range(64)))
    assert got == [want[i % 3] for i in range(64)]


def test_metadata_says_nothing_learned_from_the_text(served, onnx_path) -> None:
    client, clf = served
    meta = client.get("/metadata").json()
    assert meta["labels"] == clf.labels and meta["format_version"] == clf.meta.format_version
    body = json.dumps(meta)
    private = [t for t in clf.meta.vocab[12:] if len(t) > 3]  # words of the model's vocab
    assert private and not [t for t in private if f'"{t}"' in body or f" {t} " in body]


def test_a_token_is_required_when_set(onnx_path, tmp_path) -> None:
    clf = Classifier(onnx_path)
    with Server(make_app(clf, TOKEN), tmp_path / "t.sock") as client:
        assert client.post("/predict", json={"text": "hi"}).status_code == 401
        assert client.get("/metadata").status_code == 401
        bad = {"authorization": "Bearer wrong-token-000000000"}
        assert client.post("/predict", json={"text": "hi"}, headers=bad).status_code == 401
        ok = {"authorization": f"Bearer {TOKEN}"}
        assert client.post("/predict", json={"text": "hi"}, headers=ok).status_code == 200
        assert client.get("/health").status_code == 200  # for the supervisor


def test_off_loopback_needs_a_token(onnx_path, tmp_path) -> None:
    from edge_tl.deploy.serve import serve

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")
    with pytest.raises(ConfigError, match="without a token"):
        serve(onnx_path, host="0.0.0.0", port=0)
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ConfigError, match="shorter than 16"):
        read_token(short)


def test_the_cli_serves_and_stops_gracefully_on_sigterm(onnx_path, tmp_path) -> None:
    sock = tmp_path / "cli.sock"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "edge_tl", "serve", str(onnx_path), "--uds", str(sock)]
    proc = popen_child(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(sock, 60)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=20) as c:
            r = c.post("http://edge-tl/predict", json={"texts": TEXTS})
            assert r.status_code == 200 and len(r.json()["predictions"]) == 3
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # uvicorn finishes the requests in flight, then re-raises the signal it caught
    assert proc.returncode in (0, -signal.SIGTERM), out.decode(errors="replace")
    assert b"Shutting down" in out and b"Finished server process" in out
