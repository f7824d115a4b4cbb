"""A real SMTP server (aiosmtpd) for the end-to-end tests.

Usage: smtp_receiver.py OUT_FILE [--port PORT] [--auth USER:PASSWORD]

Listens on 127.0.0.1 (port 0 unless --port is given), prints `listening on PORT`, and appends each
message it receives to OUT_FILE as one JSON line: the envelope (mail_from, rcpt_tos), the login
used (or null), and the parsed MIME (subject, from, to, content_type, text and html parts).
With --auth, AUTH PLAIN/LOGIN is offered over plain SMTP and mail without that login is refused.
"""

import argparse
import asyncio
import json
import sys
import warnings
from email import message_from_bytes
from email.policy import default as default_policy

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def part(message, subtype):
    body = message.get_body(preferencelist=(subtype,))
    return body.get_content().replace("\r\n", "\n") if body is not None else None


class Recorder:
    def __init__(self, out_file):
        self.out_file = out_file

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.original_content or envelope.content, policy=default_policy)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "login": login,
            "subject": str(message.get("subject", "")),
            "from": str(message.get("from", "")),
            "to": str(message.get("to", "")),
            "content_type": message.get_content_type(),
            "text": part(message, "plain"),
            "html": part(message, "html"),
        }
        with open(self.out_file, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        return "250 Message accepted for delivery"


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, auth_data=auth_data if ok else None)

    return authenticate


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_file")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--auth")
    args = parser.parse_args()

    # Plain-text AUTH is what the test means to exercise.
    warnings.simplefilter("ignore")
    handler = Recorder(args.out_file)
    options = {}
    if args.auth:
        user, _, password = args.auth.partition(":")
        options = {
            "authenticator": authenticator_for(user, password),
            "auth_required": True,
            "auth_require_tls": False,
        }

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="smtp.test", **options), "127.0.0.1", args.port
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
