"""A small OpenAI-compatible HTTP server for tests: serves a local causal LM on 127.0.0.1 through `/v1/completions`
and `/v1/chat/completions` (with `n`, `temperature`, `top_p`, `max_tokens`, `stop`, `seed`, `logprobs`).

It records every request (`requests`), the most requests it handled at once (`peak_in_flight`), can fail the first
`fail_first` requests with HTTP 500 (retry tests), and can require a bearer key (`api_key`).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from curate.models.generation.local import LocalGenerator
from curate.models.generation.sampling import Sampling


class OpenAIServer:
    def __init__(self, model: str, *, fail_first: int = 0, api_key: str | None = None, delay: float = 0.0):
        self.generator = LocalGenerator(model, device="cpu")
        self.model_name = "tiny"
        self.fail_first, self.api_key, self.delay = fail_first, api_key, delay
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.peak_in_flight = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> OpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def prompts(self) -> list[str]:
        return [r["prompt"] for r in self.requests if "prompt" in r]

    # ------------------------------------------------------------- answering

    def answer(self, route: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        chat = route.endswith("/chat/completions")
        prompt = "\n".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
        with self._lock:
            self.requests.append({"route": route, "prompt": prompt, "n": body.get("n", 1), "seed": body.get("seed")})
            if self.fail_first > 0:
                self.fail_first -= 1
                return 500, {"error": {"message": "warming up", "type": "server_error"}}
        if body.get("logprobs") and not chat:
            return 200, self._logprobs(prompt, int(body["logprobs"]))
        stop = body.get("stop") or ()
        sampling = Sampling(n=body.get("n", 1), temperature=body.get("temperature", 1.0),
                            top_p=body.get("top_p", 1.0), max_new_tokens=body.get("max_tokens", 16),
                            stop=(stop,) if isinstance(stop, str) else tuple(stop), seed=body.get("seed") or 0)
        completions = self.generator.generate([prompt], sampling, keys=["request"])[0]
        choices = []
        for i, c in enumerate(completions):
            finish = "length" if c.finish == "length" else "stop"
            choices.append({"index": i, "finish_reason": finish, "logprobs": None,
                            **({"message": {"role": "assistant", "content": c.text}} if chat else {"text": c.text})})
        return 200, {"id": f"cmpl-{len(self.requests)}", "object": "chat.completion" if chat else "text_completion",
                     "created": int(time.time()), "model": self.model_name, "choices": choices,
                     "usage": {"prompt_tokens": 0, "completion_tokens": sum(c.tokens or 0 for c in completions),
                               "total_tokens": 0}}

    def _logprobs(self, prompt: str, top: int) -> dict[str, Any]:
        import torch

        tokenizer = self.generator.tokenizer
        vocab = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        logp = self.generator.option_logprobs([prompt], vocab)[0]
        best = torch.tensor(logp).topk(top)
        tops = {}
        for value, index in zip(best.values.tolist(), best.indices.tolist(), strict=True):
            tops.setdefault(vocab[index], value)
        first = vocab[best.indices[0]]
        return {"id": "cmpl-lp", "object": "text_completion", "created": 0, "model": self.model_name,
                "choices": [{"index": 0, "text": first, "finish_reason": "length",
                             "logprobs": {"tokens": [first], "token_logprobs": [best.values[0].item()],
                                          "top_logprobs": [tops], "text_offset": [0]}}]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                if server.api_key is not None and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": {"message": "bad key", "type": "auth"}})
                if self.path not in ("/v1/completions", "/v1/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay)
                    status, payload = server.answer(self.path, body)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                self._send(status, payload)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
