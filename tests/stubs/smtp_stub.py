#!/usr/bin/python3
"""A real SMTP server (Debian's python3-aiosmtpd) that records each message.

    smtp_stub.py --out FILE [--port N] [--port-file F] [--bind ADDR] [--lifetime S]

Every message accepted is appended to FILE as one JSON line:
    {"mail_from": "...", "rcpt_tos": ["..."], "data": "<the whole message>",
     "time": "..."}
written and flushed before the server answers 250, so a test that sees the
line knows the client got its OK. Same conventions as the other stubs
(tests/stubs/README.md): --port 0 picks a free port, the first stdout line
is "listening on ADDR:PORT", --port-file F gets the port (atomically),
SIGTERM/SIGINT exit 0, --lifetime ends it by itself.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time

from aiosmtpd.smtp import SMTP


class Recorder:
    def __init__(self, path):
        self.path = path

    async def handle_DATA(self, server, session, envelope):
        data = envelope.content
        if isinstance(data, bytes):
            data = data.decode("utf-8", errors="replace")
        line = json.dumps({"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                           "data": data, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
        return "250 Message accepted for delivery"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="append each message here, one JSON line")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port-file")
    ap.add_argument("--lifetime", type=float, default=0)
    args = ap.parse_args()

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handler = Recorder(args.out)
    server = loop.run_until_complete(loop.create_server(
        lambda: SMTP(handler, hostname="tenantq-test-smtp"), host=args.bind, port=args.port))
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print("listening on %s:%d" % (args.bind, port), flush=True)
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, loop.stop)
    if args.lifetime > 0:
        loop.call_later(args.lifetime, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
