#!/usr/bin/env python3
"""Measure what a hostile model server costs a release agentgate replica.

An OpenAI-compatible upstream on loopback answers a streamed chat with one
SSE line of up to 256 MiB that never ends (no newline). The script starts the
release binary against it, sends one streamed Cognite chat, and meanwhile
asks /healthz every 50 ms. It reports how long the turn took to fail, how
many bytes the upstream managed to write before the gateway hung up, the
gateway's peak RSS (VmHWM) and the slowest /healthz answer.

Usage: cargo build --release && python3 scripts/measure_hostile.py
Everything stays on 127.0.0.1; every loop is bounded.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "agentgate")
LINE_BYTES = 256 * 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hostile_upstream(port, written, ready):
    """Accept connections; answer each with SSE headers and an endless line."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(8)
    ready.set()
    chunk = b"x" * 65536
    while True:
        conn, _ = srv.accept()
        conn.recv(65536)  # the request (small); its body is not needed
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"connection: close\r\n\r\ndata: ")
        sent = 0
        try:
            while sent < LINE_BYTES:
                conn.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        written.append(sent)
        conn.close()


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def main():
    if not os.path.exists(BINARY):
        sys.exit("build the release binary first: cargo build --release")
    up_port, gw_port = free_port(), free_port()
    written, ready = [], threading.Event()
    threading.Thread(target=hostile_upstream, args=(up_port, written, ready), daemon=True).start()
    ready.wait(5)
    config = f"""
[server]
listen = "127.0.0.1:{gw_port}"
workers = 1
[cursor]
allow_ephemeral_key = true
[log]
level = "warn"
[[providers]]
name = "hostile"
kind = "openai"
base_url = "http://127.0.0.1:{up_port}/v1"
max_retries = 0
[[agents]]
id = "victim"
provider = "hostile"
model = "m"
"""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config)
    gw = subprocess.Popen([BINARY, "serve", "--config", f.name],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", gw_port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        idle_rss = peak_rss_kb(gw.pid)
        health, done = [], threading.Event()

        def poll_health():
            while not done.is_set() and len(health) < 2000:
                t = time.monotonic()
                c = http.client.HTTPConnection("127.0.0.1", gw_port, timeout=30)
                c.request("GET", "/healthz")
                c.getresponse().read()
                c.close()
                health.append(time.monotonic() - t)
                time.sleep(0.05)

        poller = threading.Thread(target=poll_health, daemon=True)
        poller.start()
        body = json.dumps({"agentExternalId": "victim", "stream": True,
                           "messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}]})
        start = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", gw_port, timeout=120)
        c.request("POST", "/api/v1/projects/p/ai/agents/chat", body,
                  {"content-type": "application/json"})
        res = c.getresponse()
        answer = res.read(4096).decode(errors="replace")
        failed_after = time.monotonic() - start
        done.set()
        poller.join(5)
        for _ in range(100):
            if written:
                break
            time.sleep(0.05)
        print(f"turn answered {res.status} after {failed_after:.2f} s: {answer[:160]!r}")
        print(f"upstream bytes written before the gateway hung up: {written[0] if written else 'n/a'}")
        print(f"gateway RSS: idle peak {idle_rss / 1024:.1f} MB, peak overall {peak_rss_kb(gw.pid) / 1024:.1f} MB")
        if health:
            print(f"/healthz during the attack: {len(health)} answers, slowest {max(health) * 1000:.1f} ms")
    finally:
        gw.send_signal(signal.SIGTERM)
        gw.wait(30)
        os.unlink(f.name)


if __name__ == "__main__":
    main()
