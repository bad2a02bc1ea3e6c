"""`edge-tl serve`: the exported classifier over HTTP (Starlette on uvicorn), for other programs
on the device or the site.

POST /predict with {"text": "..."} or {"texts": ["...", ...]}; GET /health; GET /metadata
(labels, format version, base name, head weight, limits: nothing learned from private data).
Loopback by default; any other address needs a bearer token (read from a file, never argv).
Limits on body size, batch size and text length answer 413 or 422; malformed JSON answers 400
and never stops the server; uvicorn shuts down gracefully on SIGTERM. One onnxruntime session
is shared by every request; at most `workers` run at once in a thread pool.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edge_tl.deploy.predict import Classifier
from edge_tl.errors import ConfigError, DataError, EdgeTLError


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_body_bytes: int = 4 * 2**20
    max_batch: int = 64
    max_text_chars: int = 100_000
    workers: int = 2  # requests scored at once (each uses onnxruntime's threads)


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: Path | None) -> str | None:
    """The bearer token in the first line of `path` (None: no token)."""
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError) as e:
        raise ConfigError(
            f"cannot read a token from {path}", "put the token on its first line"
        ) from e
    if len(token) < 16:
        raise ConfigError(f"the token in {path} is shorter than 16 characters", "use a longer one")
    return token


class _TooLarge(DataError):
    """A request over one of the limits (413)."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def metadata(clf: Classifier, limits: Limits) -> dict[str, Any]:
    """What GET /metadata says: nothing learned from the training text (no vocab, no n-grams)."""
    prov = clf.provenance
    return {
        "format": "edge_tl-onnx-classifier",
        "format_version": clf.meta.format_version,
        "labels": list(clf.labels),
        "base": prov.get("base"),
        "tfidf_weight": None if clf.meta.tfidf is None else clf.meta.tfidf.get("weight"),
        "tfidf_mix": clf.meta.mix,
        "edge_tl_version": prov.get("edge_tl_version"),
        "limits": asdict(limits),
    }


def _texts(body: Any, limits: Limits) -> tuple[list[str], bool]:
    """The request's texts and whether it sent one text; DataError names what is wrong."""
    if not isinstance(body, dict) or ("text" in body) == ("texts" in body):
        raise DataError('send {"text": "..."} or {"texts": ["...", ...]}')
    one = "text" in body
    texts = [body["text"]] if one else body["texts"]
    if not isinstance(texts, list) or not texts:
        raise DataError('"texts" must be a non-empty list of strings')
    if len(texts) > limits.max_batch:
        raise _TooLarge(f"{len(texts)} texts: at most {limits.max_batch} a request")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise DataError(f"text {i + 1} is not a non-empty string")
        if len(t) > limits.max_text_chars:
            raise _TooLarge(f"text {i + 1} is longer than {limits.max_text_chars} characters")
    return texts, one


def make_app(clf: Classifier, token: str | None = None, limits: Limits | None = None) -> Starlette:
    """The ASGI app serving `clf`."""
    limits = limits or Limits()
    limiter = anyio.CapacityLimiter(limits.workers)
    meta = metadata(clf, limits)

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def get_metadata(request: Request) -> JSONResponse:
        if not authorised(request):
            return _error(401, "missing or wrong bearer token")
        return JSONResponse(meta)

    async def predict(request: Request) -> JSONResponse:
        if not authorised(request):
            return _error(401, "missing or wrong bearer token")
        body = await _read_body(request, limits.max_body_bytes)
        if body is None:
            return _error(413, f"request body over {limits.max_body_bytes} bytes")
        try:
            texts, one = _texts(json.loads(body), limits)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body is not JSON")
        except DataError as e:
            return _error(413 if isinstance(e, _TooLarge) else 422, e.message)
        try:
            probs = await anyio.to_thread.run_sync(clf.predict_proba, texts, limiter=limiter)
        except EdgeTLError as e:
            return _error(500, str(e))
        preds = [clf.prediction(p) for p in probs]
        rows = [{"label": p.label, "probs": p.probs} for p in preds]
        return JSONResponse(rows[0] if one else {"predictions": rows})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/metadata", get_metadata, methods=["GET"]),
        Route("/predict", predict, methods=["POST"]),
    ]
    return Starlette(routes=routes)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes `limit` bytes (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def serve(
    model: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    uds: Path | None = None,
    token_file: Path | None = None,
    threads: int | None = None,
    providers: list[str] | None = None,
    limits: Limits | None = None,
    log_level: str = "info",
) -> None:
    """Load `model` once and serve it until SIGINT/SIGTERM (graceful: requests in flight end)."""
    import uvicorn

    token = read_token(token_file)
    if uds is None and not is_loopback(host) and token is None:
        raise ConfigError(
            f"serving on {host} without a token would let anyone on the network use the model",
            "pass --token-file FILE (a bearer token of 16+ characters), or serve on 127.0.0.1",
        )
    clf = Classifier(model, threads=threads, providers=providers)
    app = make_app(clf, token, limits)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        uds=None if uds is None else str(uds),
        log_level=log_level,
        access_log=False,  # one line per request would flood a device's log
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()


__all__ = ["Limits", "is_loopback", "make_app", "metadata", "read_token", "serve"]
