"""An event webhook receiver that verifies every request the way a brand's engineer would.

Standard Webhooks signatures are checked with the official `standardwebhooks` package
(`Webhook(secret).verify(body, headers)`); MAAC's `CrescLab-Signature` with a plain HMAC-SHA256
of the raw body under the share secret string, compared with `hmac.compare_digest`. A `whpk_`
public key (an ed25519 subscription) checks the `v1a` entries of `webhook-signature` instead, with
the `cryptography` package's Ed25519 verifier over `{webhook-id}.{webhook-timestamp}.{body}`, as
the Standard Webhooks specification defines them; the package knows nothing of hookplane.

The share secrets are only known once the subscription exists, so the test posts them to
`POST /secrets` (a JSON list) before anything is published. Each request is verified against each
secret separately, so a test can tell which secrets sign it. The receiver answers 200 when every
scheme present verifies with at least one secret, 401 otherwise. Prints `listening on PORT` once
ready; GET /results returns what it saw, one object per request.

usage: standard_webhooks_receiver.py
"""

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

TOLERANCE_SECONDS = 5 * 60

secrets = []
results = []
lock = threading.Lock()


def standard_ok(secret, body, headers):
    if secret.startswith("whpk_"):
        return ed25519_ok(secret, body, headers)
    try:
        Webhook(secret).verify(body, headers)
        return True
    except WebhookVerificationError:
        return False


def ed25519_ok(public_key, body, headers):
    """True when a `v1a` entry is an ed25519 signature by `public_key` of the signed content."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key[len("whpk_"):]))
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    signed = f"{msg_id}.{timestamp}.".encode() + body
    for entry in headers.get("webhook-signature", "").split():
        version, _, encoded = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(encoded, validate=True), signed)
            return True
        except (InvalidSignature, binascii.Error, ValueError):
            continue
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
            "signature_versions": [
                e.partition(",")[0] for e in headers.get("webhook-signature", "").split()
            ],
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
