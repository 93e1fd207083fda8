#!/usr/bin/env python3
"""Waits until the balancer on 127.0.0.1:PORT answers GET /rep; exits 1 after TIMEOUT s."""

import sys
import time
import urllib.request

port, timeout = int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
deadline = time.monotonic() + timeout
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/rep", timeout=2) as reply:
            print(reply.read().decode())
            break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"no answer from http://127.0.0.1:{port}/rep within {timeout:g} s")
        time.sleep(0.3)
