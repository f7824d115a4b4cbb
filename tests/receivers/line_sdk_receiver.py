"""A LINE webhook receiver that verifies every request with the official line-bot-sdk.

It stands in for a brand's bot behind hookplane: forwarded requests must pass the SDK's own
signature check and parse as LINE webhook events. Prints `listening on PORT` once ready.
GET /results returns what it saw, one object per request.

usage: line_sdk_receiver.py CHANNEL_SECRET
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from linebot.v3.exceptions import InvalidSignatureError
from linebot.v3.webhook import WebhookParser

parser = WebhookParser(sys.argv[1])
results = []
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode("utf-8")
        signature = self.headers.get("x-line-signature", "")
        record = {
            "event_id": self.headers.get("x-hookplane-event-id"),
            "attempt": self.headers.get("x-hookplane-attempt"),
            "forwarding_set": self.headers.get("x-hookplane-forwarding-set"),
        }
        try:
            events = parser.parse(body, signature)
            record.update(verified=True, events=[type(e).__name__ for e in events])
            status = 200
        except InvalidSignatureError as err:
            record.update(verified=False, error=str(err))
            status = 400
        with lock:
            results.append(record)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self):
        with lock:
            payload = json.dumps(results).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
