"""A raw HTTP/1.1 worker for TQServer's security tests: it parses requests
itself (no framework to paper over what arrives), records every request it
saw, and can answer with broken framing on purpose.

Paths (matched by their ending, so any route prefix works):
  .../seen        the requests seen so far, one "METHOD PATH BODYLEN" a line
  .../head        the raw request head it received, as the body
  .../short-cl    Content-Length 5, then "hello", then (a moment later) a
                  whole second response on the same connection
  .../bad-cl      Content-Length: abc
  .../stall-body  Content-Length 100, 10 bytes, then silence
  /health         200
  anything else   200 "ok METHOD PATH BODYLEN"
"""
import os
import socket
import socketserver
import threading
import time

port = int(os.environ["WORKER_PORT"])
seen = []
lock = threading.Lock()


def read_head(f):
    lines = []
    while True:
        line = f.readline(65537)
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            return lines
        lines.append(line.rstrip(b"\r\n"))


def read_body(f, headers):
    te = headers.get(b"transfer-encoding", b"").lower()
    if te.endswith(b"chunked"):
        data = b""
        while True:
            size = int(f.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return data
            data += f.read(size)
            f.readline()
    n = int(headers.get(b"content-length", b"0") or b"0")
    return f.read(n) if n else b""


def send(w, status, body, extra=b""):
    w.write(
        b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\n" + extra + b"\r\n" + body
    )
    w.flush()


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            head = read_head(self.rfile)
            if not head:
                return
            method, path = head[0].split(b" ")[:2]
            headers = {}
            for h in head[1:]:
                k, _, v = h.partition(b":")
                headers[k.strip().lower()] = v.strip()
            body = read_body(self.rfile, headers)
            entry = b"%s %s %d" % (method, path, len(body))
            p = path.split(b"?")[0]
            if p != b"/health" and not p.endswith(b"/seen"):
                with lock:
                    seen.append(entry)
            if p == b"/health":
                send(self.wfile, b"200 OK", b"")
            elif p.endswith(b"/seen"):
                with lock:
                    send(self.wfile, b"200 OK", b"".join(s + b"\n" for s in seen))
            elif p.endswith(b"/head"):
                send(self.wfile, b"200 OK", b"\n".join(head) + b"\n")
            elif p.endswith(b"/short-cl"):
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                self.wfile.flush()
                time.sleep(0.2)
                send(self.wfile, b"200 OK", b"injected", b"X-Injected: yes\r\n")
            elif p.endswith(b"/bad-cl"):
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nabc")
                self.wfile.flush()
            elif p.endswith(b"/stall-body"):
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                self.wfile.flush()
                time.sleep(30)
                return
            else:
                send(self.wfile, b"200 OK", b"ok " + entry)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


print(f"raw worker {os.environ.get('WORKER_NAME')} on port {port}", flush=True)
Server(("127.0.0.1", port), Handler).serve_forever()
