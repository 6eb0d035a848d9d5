"""A tiny OpenAI-compatible server for the bench tests: /v1/models and streamed /v1/chat/completions.

It answers every chat with a fixed few words, reports usage, and puts DFlash statistics where the
test asks (the final chunk, inside usage, or only a mean), so the client side is tested in isolation.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubServer:
    def __init__(self, api_key: str | None = None, dflash: str = "chunk", fail: bool = False):
        self.api_key, self.dflash, self.fail = api_key, dflash, fail
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def stats(self) -> dict:
        if self.dflash == "mean":
            return {"mean_acceptance_length": 2.5}
        return {"acceptance_lengths": [3, 2, 1], "mean_acceptance_length": 2.0, "steps": 3}


def _handler(stub: StubServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _authorized(self) -> bool:
            if stub.api_key and self.headers.get("Authorization") != f"Bearer {stub.api_key}":
                self._json(401, {"error": {"message": "bad key"}})
                return False
            return True

        def _json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self._authorized():
                self._json(200, {"object": "list", "data": [{"id": "stub-model", "object": "model"}]})

        def do_POST(self) -> None:
            if not self._authorized():
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with stub.lock:
                stub.requests.append(body)
            if stub.fail:
                self._json(500, {"error": {"message": "engine exploded"}})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            words = [f"reply{len(body['messages'])}", " to", " you"]

            def send(obj) -> None:
                self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
                self.wfile.flush()

            base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": body["model"]}
            send({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
            for w in words:
                send({**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
            last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            usage = {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}
            if stub.dflash == "usage":
                usage["dflash"] = stub.stats()
            else:
                last["dflash"] = stub.stats()
            send(last)
            send({**base, "choices": [], "usage": usage})
            self.wfile.write(b"data: [DONE]\n\n")

    return Handler
