"""A classifier with no torch graph at all: a fixed random-projection linear model in
numpy on ``(B, 3, 64, 64)`` model inputs (``--model numpy_model:scores --black-box
--preprocess`` with :data:`PREPROCESS`), and the same model behind a local HTTP endpoint
(:class:`Endpoint`, for the endpoint tests; loopback only)."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

NUM_CLASSES = 5
SIZE = 64
PREPROCESS = json.dumps({"backend": "pil", "interpolation": "bilinear", "resize": 73, "crop": SIZE})
"""The declared loader: Pillow bilinear, shorter side 73, centre crop 64, ImageNet
mean and std."""

_WEIGHTS = np.random.default_rng(0).standard_normal((3 * SIZE * SIZE, NUM_CLASSES)).astype(
    np.float32
) / np.float32(np.sqrt(3 * SIZE * SIZE))


def scores(inputs: np.ndarray) -> np.ndarray:
    """``(B, 3, 64, 64)`` float32 model inputs -> ``(B, 5)`` logits."""
    if inputs.shape[1:] != (3, SIZE, SIZE):
        raise ValueError(f"expected (B, 3, {SIZE}, {SIZE}) inputs, got {inputs.shape}")
    return inputs.reshape(len(inputs), -1) @ _WEIGHTS


def probabilities(inputs: np.ndarray) -> np.ndarray:
    """The same model's softmax probabilities."""
    z = scores(inputs)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class Endpoint:
    """The model served on ``127.0.0.1`` (a free port) in a thread, with the adaptanon
    contract. ``mode`` says how it answers: ``ok``, ``probabilities``, ``garbage`` (not
    JSON), ``no-scores`` (JSON without ``scores``), ``short`` (one row too few), ``nan``,
    ``slow`` (answers only once the endpoint is closed, so every client timeout expires,
    however loaded the machine), ``flaky`` (HTTP 503 the first time it sees a
    request body), ``refuse`` (HTTP 400). ``requests`` counts the requests served."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode, self.requests = mode, 0
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.seen: set[bytes] = set()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with endpoint.lock:
                    endpoint.requests += 1
                    first = raw not in endpoint.seen
                    endpoint.seen.add(raw)
                body = json.loads(raw)
                x = np.frombuffer(base64.b64decode(body["data"]), "<f4").reshape(body["shape"])
                mode = endpoint.mode
                if mode == "slow":
                    endpoint.closing.wait()
                if mode == "refuse" or (mode == "flaky" and first):
                    self.send_error(400 if mode == "refuse" else 503)
                    return
                out = probabilities(x) if mode == "probabilities" else scores(x)
                if mode == "short":
                    out = out[1:]
                if mode == "nan":
                    out = out.copy()
                    out[0, 0] = np.nan
                answer = {"scores": out.tolist()} if mode != "no-scores" else {"logits": 1}
                data = b"<html>oops" if mode == "garbage" else json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that gave up (timeout) closed the connection

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/predict"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Endpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
