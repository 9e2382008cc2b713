"""A WebSocket echo worker for TQServer's tests, written by hand on
Python's http.server (RFC 6455: the handshake, masked client frames,
fragments not used by the tests): /health, and /ws echoes text and binary
messages, answers pings with pongs, and answers a close with the same
code. /ws?die=N exits the process after N messages (a worker that dies
mid-connection). A plain GET of /ws without the upgrade gets 426."""
import base64
import hashlib
import os
import time
import struct
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

port = int(os.environ["WORKER_PORT"])
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_exact(f, n):
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_frame(f):
    b0, b1 = read_exact(f, 2)
    opcode = b0 & 0x0F
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", read_exact(f, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", read_exact(f, 8))[0]
    mask = read_exact(f, 4) if b1 & 0x80 else b"\0\0\0\0"
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(read_exact(f, n)))
    return opcode, data


def frame(opcode, data):
    n = len(data)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + data


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/health":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if url.path.endswith("/events"):
            # An event stream: one event every 100 ms, never ending.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            n = 0
            try:
                while True:
                    event = b"data: %d\n\n" % n
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                    n += 1
                    time.sleep(0.1)
            except ConnectionError:
                pass
            self.close_connection = True
            return
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            # A body on a plain request is read, so the connection stays
            # in step for the next one.
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = b"a WebSocket endpoint\n"
            self.send_response(426)
            self.send_header("Upgrade", "websocket")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("X-Worker", "ws.py")
        self.end_headers()
        self.wfile.flush()
        die = int(parse_qs(url.query).get("die", ["0"])[0])
        count = 0
        try:
            while True:
                opcode, data = read_frame(self.rfile)
                if opcode in (1, 2):
                    count += 1
                    if die and count >= die:
                        os._exit(7)
                    self.wfile.write(frame(opcode, data))
                elif opcode == 9:
                    self.wfile.write(frame(10, data))
                elif opcode == 8:
                    self.wfile.write(frame(8, data[:2]))
                    self.wfile.flush()
                    break
                self.wfile.flush()
        except (EOFError, ConnectionError):
            pass
        self.close_connection = True

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
