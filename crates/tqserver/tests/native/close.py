"""A command worker for TQServer's tests that closes every connection
right after its answer, without saying so (HTTP/1.1, no `Connection:
close`): a kept-alive connection to it is always dead by the next
request. / answers "ok"."""
import os, socket, threading
port = int(os.environ["WORKER_PORT"])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", port)); s.listen(64)
def serve(c):
    f = c.makefile("rb")
    line = f.readline()
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b""): break
        k, _, v = h.decode().partition(":"); headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    if n: f.read(n)
    body = b"ok"
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + body)
    c.close()   # silently: no Connection: close
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
