#!/usr/bin/env python3
"""Reload latency: rewrite the GREETING of the index worker's main.rs and
time until the page at URL shows it. Prints one time (seconds) per save.

    bench/reload.py http://127.0.0.1:8080/ workers/index/src/main.rs 10
"""
import re
import sys
import time
import urllib.request

url, main_rs, n = sys.argv[1], sys.argv[2], int(sys.argv[3])


def page():
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()
    except Exception:
        return ""


# The first build (and start) may take minutes.
deadline = time.time() + 900
while "<p id=\"greeting\">" not in page():
    if time.time() > deadline:
        sys.exit("the index worker never answered")
    time.sleep(0.2)

source = open(main_rs).read()
times = []
for i in range(n):
    text = f"Reload number {i} at {time.time():.3f}."
    new = re.sub(r'const GREETING: &str = ".*?";', f'const GREETING: &str = "{text}";', source)
    assert new != source
    t0 = time.monotonic()
    with open(main_rs, "w") as f:
        f.write(new)
    while text not in page():
        if time.monotonic() - t0 > 120:
            sys.exit(f"save {i}: the new text never appeared")
        time.sleep(0.01)
    times.append(time.monotonic() - t0)
    time.sleep(0.5)
print(" ".join(f"{t:.3f}" for t in times))
