"""An event webhook receiver that verifies every request the way a brand's engineer would.

Standard Webhooks signatures are checked with the official `standardwebhooks` package
(`Webhook(secret).verify(body, headers)`); MAAC's `CrescLab-Signature` with a plain HMAC-SHA256
of the raw body under the share secret string, compared with `hmac.compare_digest`.

The share secrets are only known once the subscription exists, so the test posts them to
`POST /secrets` (a JSON list) before anything is published. Each request is verified against each
secret separately, so a test can tell which secrets sign it. The receiver answers 200 when every
scheme present verifies with at least one secret, 401 otherwise. Prints `listening on PORT` once
ready; GET /results returns what it saw, one object per request.

usage: standard_webhooks_receiver.py
"""

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

secrets = []
results = []
lock = threading.Lock()


def standard_ok(secret, body, headers):
    try:
        Webhook(secret).verify(body, headers)
        return True
    except WebhookVerificationError:
        return False


def maac_ok(secret, body, signature):
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/secrets":
            with lock:
                secrets[:] = json.loads(body)
            self.answer(204, b"")
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        with lock:
            known = list(secrets)
        record = {
            "path": self.path,
            "content_type": headers.get("content-type"),
            "webhook_id": headers.get("webhook-id"),
            "webhook_timestamp": headers.get("webhook-timestamp"),
            "signature_count": len(headers.get("webhook-signature", "").split()),
            "idempotency_key": headers.get("cresclab-idempotency-key"),
            "body": body.decode("utf-8"),
            # One entry per secret, in the order given; null when the scheme's headers are absent.
            "standard": None,
            "maac": None,
        }
        if "webhook-signature" in headers:
            record["standard"] = [standard_ok(s, body, headers) for s in known]
        if "cresclab-signature" in headers:
            record["maac"] = [maac_ok(s, body, headers["cresclab-signature"]) for s in known]
        present = [v for v in (record["standard"], record["maac"]) if v is not None]
        verified = bool(present) and all(any(v) for v in present)
        record["verified"] = verified
        with lock:
            results.append(record)
        self.answer(200 if verified else 401, b"received" if verified else b"bad signature")

    def do_GET(self):
        with lock:
            payload = json.dumps(results).encode()
        self.answer(200, payload, "application/json")

    def answer(self, status, payload, content_type="text/plain"):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
