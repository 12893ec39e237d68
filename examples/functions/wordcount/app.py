"""wordcount: a Codigo HTTP function in Python's standard library.

It counts the words and characters of a text. Codigo POSTs each job's payload here, signed per
Standard Webhooks with this function's own secret; the answer decides what becomes of the job:

- 200 with a JSON body: the job succeeds and the body is its result;
- 503 with Retry-After while the function warms up: Codigo retries after that delay;
- 400 for a language it does not handle: a permanent failure, dead-lettered;
- 401 for a request whose signature does not verify (not from Codigo, or a wrong secret).

Settings (environment): FUNCTION_SECRET (whsec_..., from `codigo-ctl types secret
text.wordcount`), PORT (8090), WARMUP_SECONDS (0: how long it answers 503 after starting).
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

LANGUAGES = {"en", "es", "pt", "fr"}
STARTED = time.monotonic()


class Function(BaseHTTPRequestHandler):
    webhook: Webhook
    warmup: float

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            self.webhook.verify(body, dict(self.headers.items()))
        except WebhookVerificationError as error:
            return self.answer(401, {"error": f"signature does not verify: {error}"})
        if time.monotonic() - STARTED < self.warmup:
            return self.answer(503, {"error": "warming up"}, retry_after=1)
        payload = json.loads(body)
        language = payload.get("language", "en")
        if language not in LANGUAGES:
            return self.answer(400, {"error": f"language {language!r} is not supported"})
        text = payload["text"]
        self.answer(
            200,
            {
                "words": len(text.split()),
                "characters": len(text),
                "job_id": self.headers["webhook-id"],
                "attempt": int(self.headers["Codigo-Attempt"]),
            },
        )

    def do_GET(self) -> None:
        # Liveness for Kubernetes probes.
        self.answer(200, {"status": "ok"})

    def answer(self, status: int, body: dict, retry_after: int | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("wordcount: " + format % args + "\n")


def main() -> None:
    secret = os.environ.get("FUNCTION_SECRET")
    if not secret:
        sys.exit("FUNCTION_SECRET is not set: `codigo-ctl types secret text.wordcount` prints it")
    Function.webhook = Webhook(secret)
    Function.warmup = float(os.environ.get("WARMUP_SECONDS", "0"))
    port = int(os.environ.get("PORT", "8090"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Function)
    print(f"wordcount listening on :{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
