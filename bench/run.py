#!/usr/bin/env python3
"""End-to-end load benchmark of agentgate over real sockets, beside a floor and LiteLLM.

One command (docs/benchmarks.md):

    python3 bench/run.py            # the full run (minutes; installs wrk and LiteLLM if missing)
    python3 bench/run.py --smoke    # seconds: every leg once, tiny loads, no LiteLLM

It builds the release binaries, starts on loopback a one-thread Rust mock upstream
(bench/mock_upstream.rs), the floor (bench/floor.rs: the cheapest actix-web + reqwest
pass-through), agentgate (the release binary with the shipped workers setting: one per core)
and LiteLLM's proxy (pinned, in its own venv), all on the same mock, and drives each with wrk
(one thread, a Lua POST body). For every leg it reads the CPU time (utime + stime of the
process tree, from /proc) and RSS of the process under test around each run.

It prints a table of every target with its measured value and writes the figures as JSON
(--json, default target/bench/results.json). Timings are never assertions: a missed target is
reported, not failed; the exit status is non-zero only when a leg could not be measured.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Pinned. Its [proxy] extra installs from PyPI alone; that of 1.110.2 (the newest
# when this was written) wants a litellm-proxy package of the same version that the
# index does not have.
LITELLM = "litellm[proxy]==1.80.0"
TICK = os.sysconf("SC_CLK_TCK")
BINARY = os.path.join(ROOT, "target/release/agentgate")


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


def cpu_seconds(pid):
    """utime + stime of pid and all its descendants, in seconds."""
    parents = {}
    times = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / TICK
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += times.get(p, 0.0)
        todo.extend(c for c, parent in parents.items() if parent == p)
    return total


def tree(pid):
    """pid and all its descendants."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
            except OSError:
                pass
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(c for c, parent in parents.items() if parent == p and c not in found)
    return found


def rss_mb(pid):
    """Resident memory of pid and all its descendants, in MB."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Service:
    """A child process that prints `listening <port>` (or is polled on a known port)."""

    def __init__(self, name, argv, env=None, port=None, health=None, cwd=None):
        self.name = name
        self.log = tempfile.TemporaryFile()
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if port is None else self.log,
            stderr=self.log,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        if port is None:
            line = self.proc.stdout.readline().decode()
            m = re.match(r"listening (\d+)", line)
            if not m:
                self.stop()
                raise RuntimeError(f"{name} did not start: {line!r} {self.output()}")
            self.port = int(m.group(1))
        else:
            self.port = port
        if health:
            deadline = time.time() + 180
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{self.port}{health}", timeout=2)
                    break
                except Exception:
                    if self.proc.poll() is not None or time.time() > deadline:
                        output = self.output()
                        self.stop()
                        raise RuntimeError(f"{name} did not become healthy: {output}")
                    time.sleep(0.2)

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def stop(self):
        stop_group(self.proc)


def stop_group(proc):
    """SIGTERM the child's process group, then SIGKILL what is left after 10 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- load


def ensure_wrk():
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        sys.exit("wrk is required: apt-get install wrk")
    log("installing wrk (apt-get)")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"],
        check=True,
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
    )


LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
"""


def unit_ms(value):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if not m:
        return None
    n, u = float(m.group(1)), m.group(2)
    return n * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[u]


def wrk(url, body, clients, seconds, measure_pid, workdir):
    """Run wrk; return req/s, p50/p99 (ms), CPU µs per request of measure_pid's tree, max RSS."""
    body_file = os.path.join(workdir, "body.json")
    with open(body_file, "w") as f:
        f.write(json.dumps(body, separators=(',', ':')))
    lua = os.path.join(workdir, "post.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    before = cpu_seconds(measure_pid)
    proc = subprocess.Popen(
        ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency", "-s", lua, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, BENCH_BODY=body_file),
    )
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, rss_mb(measure_pid))
        time.sleep(0.25)
    out = proc.stdout.read().decode()
    after = cpu_seconds(measure_pid)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        lat[pct] = unit_ms(m.group(1)) if m else None
    return {
        "clients": clients,
        "requests": requests,
        "rps": requests / max(1, round(seconds)),
        "p50_ms": lat["50"],
        "p99_ms": lat["99"],
        "cpu_us_per_request": (after - before) * 1e6 / max(requests, 1),
        "peak_rss_mb": peak,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def post_json(url, body):
    req = urllib.request.Request(
        url, data=json.dumps(body, separators=(',', ':')).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.loads(res.read())


# ---------------------------------------------------------------- streams


async def until_event(port, path, body, keep_alive=False):
    """Send a streamed request on a new connection and read until its first event.

    Returns the writer (its connection still open) and the seconds that took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body, separators=(',', ':')).encode()
    close = "" if keep_alive else "connection: close\r\n"
    start = time.perf_counter()
    writer.write(
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n{close}\r\n".encode()
        + data
    )
    await writer.drain()
    seen = b""
    while b"data:" not in seen:
        chunk = await reader.read(65536)
        if not chunk:
            writer.close()
            raise RuntimeError(f"no event: {seen[:300]!r}")
        seen += chunk
    return writer, time.perf_counter() - start


async def first_event(port, path, body):
    """Seconds from sending a streamed request to the first bytes carrying an event."""
    writer, elapsed = await until_event(port, path, body)
    writer.close()
    return elapsed


async def ttfe(port, path, body, n):
    times = []
    for _ in range(n):
        times.append(await first_event(port, path, body))
    times.sort()
    return {
        "p50_ms": times[len(times) // 2] * 1000,
        "p99_ms": times[int((len(times) - 1) * 0.99)] * 1000,
        "max_ms": times[-1] * 1000,
    }


async def hold_streams(port, path, body, n, pid):
    """Open n slow streams at once, wait for each one's first event; the gateway's RSS then."""
    async def one():
        writer, _ = await until_event(port, path, body, keep_alive=True)
        return writer

    writers = []
    for start in range(0, n, 100):
        writers += await asyncio.gather(*(one() for _ in range(min(100, n - start))))
    rss = rss_mb(pid)
    for w in writers:
        w.close()
    return rss


# ---------------------------------------------------------------- legs


def agentgate_config(upstream_port, workdir, workers=0):
    path = os.path.join(workdir, "agentgate.toml")
    with open(path, "w") as f:
        f.write(
            f"""
[server]
listen = "127.0.0.1:0"
max_connections = 25000
workers = {workers}
shutdown_grace_seconds = 2

[log]
format = "json"
level = "info"

[cursor]
max_conversation_age_seconds = 86400

[[providers]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:{upstream_port}/v1"

[[agents]]
id = "bench"
provider = "mock"
model = "bench"
history_budget_bytes = 1048576

[[agents]]
id = "slow"
provider = "mock"
model = "slow"
max_turn_seconds = 600
"""
        )
    return path


def start_agentgate(upstream_port, workdir, workers=0):
    config = agentgate_config(upstream_port, workdir, workers)
    binary = BINARY
    key = "k1:" + __import__("base64").b64encode(os.urandom(32)).decode()
    proc = subprocess.Popen(
        [binary, "serve", "--config", config],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, AGENTGATE_CURSOR_KEYS=key, RUST_LOG=""),
        start_new_session=True,
    )
    port = None
    for line in proc.stderr:
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if v.get("fields", {}).get("message") == "listening":
            port = v["fields"]["port"]
            break
    if port is None:
        raise RuntimeError(f"agentgate did not start (exit {proc.poll()}); run it by hand with {config}")
    # Keep reading its log (as a log shipper would), so it never blocks on a full pipe.
    def drain():
        for _ in proc.stderr:
            pass

    __import__("threading").Thread(target=drain, daemon=True).start()

    class Proc:
        pass

    svc = Proc()
    svc.proc, svc.port, svc.pid, svc.name = proc, port, proc.pid, "agentgate"

    svc.stop = lambda: stop_group(proc)
    return svc


def start_litellm(upstream_port, workdir, smoke):
    venv = os.path.join(ROOT, "target/bench/litellm-venv")
    exe = os.path.join(venv, "bin/litellm")
    if not os.path.exists(exe):
        log(f"installing {LITELLM} into {venv}")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run(
            [os.path.join(venv, "bin/pip"), "install", "-q", "--disable-pip-version-check", LITELLM],
            check=True,
        )
    config = os.path.join(workdir, "litellm.yaml")
    with open(config, "w") as f:
        f.write(
            f"""model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: none
litellm_settings:
  telemetry: false
  drop_params: true
"""
        )
    port = free_port()
    return Service(
        "litellm",
        [exe, "--config", config, "--port", str(port), "--host", "127.0.0.1"],
        env={
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "DISABLE_SCHEMA_UPDATE": "True",
        },
        port=port,
        health="/health/liveliness",
        cwd=workdir,
    )


def cognite_body(cursor=None, stream=False, agent="bench"):
    body = {
        "agentExternalId": agent,
        "messages": [{"role": "user", "content": {"type": "text", "text": "Hello, agent"}}],
    }
    if cursor:
        body["cursor"] = cursor
    if stream:
        body["stream"] = True
    return body


OPENAI_BODY = {"model": "bench", "messages": [{"role": "user", "content": "Hello, agent"}]}


def cursor_of_size(gw, kib):
    """A cursor whose sealed state is about `kib` KiB (one long first message)."""
    text = "lorem ipsum dolor sit amet " * (kib * 1024 // 27)
    body = cognite_body()
    body["messages"][0]["content"]["text"] = text
    res = post_json(f"http://127.0.0.1:{gw.port}/api/v1/projects/bench/ai/agents/chat", body)
    return res["response"]["cursor"]


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="seconds-long: tiny loads, no LiteLLM")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--seconds", type=float, default=10, help="per load run (full mode)")
    ap.add_argument("--soak", type=int, default=1_000_000, help="requests in the soak (full mode)")
    ap.add_argument("--json", default=os.path.join(ROOT, "target/bench/results.json"))
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--binary", help="the agentgate binary to measure (default: the one built)")
    ap.add_argument("--workers", type=int, default=0, help="agentgate's and the floors' workers (0: one per core)")
    ap.add_argument(
        "--debug",
        action="store_true",
        help="use debug binaries (the test command's smoke run: checks the harness, measures nothing)",
    )
    args = ap.parse_args()
    seconds = 1 if args.smoke else args.seconds
    # A CI timeout's SIGTERM still runs the `finally` that stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # 1,000 streams need about 2,000 descriptors in the gateway and 1,000 here.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))
    clients_list = [1, 16, 64]
    streams = 50 if args.smoke else 1000
    ttfe_n = 20 if args.smoke else 300
    soak = 5_000 if args.smoke else args.soak

    ensure_wrk()
    if not args.no_build:
        log("building the " + ("debug" if args.debug else "release") + " binaries")
        subprocess.run(
            ["cargo", "build", "--locked", "--bin", "agentgate", "--example", "mock_upstream", "--example", "floor"]
            + ([] if args.debug else ["--release"]),
            check=True,
            cwd=ROOT,
        )
    rel = os.path.join(ROOT, "target/debug" if args.debug else "target/release")
    global BINARY
    BINARY = args.binary or os.path.join(rel, "agentgate")
    results = {"mode": "smoke" if args.smoke else "full", "seconds_per_run": seconds, "legs": {}}
    services = []
    workdir = tempfile.mkdtemp(prefix="agentgate-bench-")
    try:
        mock = Service("mock", [os.path.join(rel, "examples/mock_upstream"), "0"])
        services.append(mock)
        floor = Service(
            "floor",
            [os.path.join(rel, "examples/floor"), "0", f"http://127.0.0.1:{mock.port}/v1", str(args.workers)],
        )
        services.append(floor)
        floor_pw = Service(
            "floor_per_worker",
            [os.path.join(rel, "examples/floor"), "0", f"http://127.0.0.1:{mock.port}/v1", str(args.workers), "per-worker"],
        )
        services.append(floor_pw)
        gw = start_agentgate(mock.port, workdir, args.workers)
        services.append(gw)
        time.sleep(0.5)
        results["agentgate_idle_rss_mb"] = rss_mb(gw.pid)

        chat = "/api/v1/projects/bench/ai/agents/chat"
        legs = [
            ("direct", mock, f"http://127.0.0.1:{mock.port}/v1/chat/completions", OPENAI_BODY),
            ("floor", floor, f"http://127.0.0.1:{floor.port}/", cognite_body()),
            ("floor_per_worker", floor_pw, f"http://127.0.0.1:{floor_pw.port}/", cognite_body()),
            ("agentgate", gw, f"http://127.0.0.1:{gw.port}{chat}", cognite_body()),
        ]
        litellm = None
        if not (args.smoke or args.no_litellm):
            litellm = start_litellm(mock.port, workdir, args.smoke)
            services.append(litellm)
            legs.append(
                ("litellm", litellm, f"http://127.0.0.1:{litellm.port}/v1/chat/completions", OPENAI_BODY)
            )
        for name, svc, url, body in legs:
            log(f"{name}: warm-up")
            wrk(url, body, 16, 1, svc.pid, workdir)
            runs = []
            for c in clients_list:
                log(f"{name}: {c} clients, {seconds} s")
                runs.append(wrk(url, body, c, seconds, svc.pid, workdir))
            results["legs"][name] = runs

        cursors = {}
        for kib in (16, 128):
            cursor = cursor_of_size(gw, kib)
            cursors[kib] = len(cursor)
            log(f"agentgate with a {kib} KiB cursor ({len(cursor)} chars)")
            url = f"http://127.0.0.1:{gw.port}{chat}"
            # (The smoke run's debug build is slow: few clients, or none finish.)
            results["legs"][f"agentgate_cursor_{kib}KiB"] = [
                wrk(url, cognite_body(cursor), 4 if args.smoke else 64, max(seconds, 2), gw.pid, workdir)
            ]
        results["cursor_chars"] = cursors

        log(f"time to first event, {ttfe_n} sequential streams per leg")
        results["ttfe"] = {
            "direct": asyncio.run(ttfe(mock.port, "/v1/chat/completions", dict(OPENAI_BODY, stream=True), ttfe_n)),
            "agentgate": asyncio.run(ttfe(gw.port, chat, cognite_body(stream=True), ttfe_n)),
        }

        log(f"{streams} concurrent slow streams")
        results["streams"] = {
            "count": streams,
            "rss_mb": asyncio.run(
                hold_streams(gw.port, chat, cognite_body(stream=True, agent="slow"), streams, gw.pid)
            ),
        }

        log(f"soak: {soak} requests at 64 clients")
        url = f"http://127.0.0.1:{gw.port}{chat}"
        wrk(url, cognite_body(), 64, 2 if args.smoke else 5, gw.pid, workdir)
        rss_before = rss_mb(gw.pid)
        rps = results["legs"]["agentgate"][-1]["rps"] or 1000
        soak_seconds = max(2, int(soak / rps) + 1)
        soak_run = wrk(url, cognite_body(), 64, soak_seconds, gw.pid, workdir)
        time.sleep(1)
        rss_after = rss_mb(gw.pid)
        results["soak"] = {
            "requests": soak_run["requests"],
            "rss_before_mb": rss_before,
            "rss_after_mb": rss_after,
            "growth_pct": (rss_after - rss_before) * 100 / rss_before,
        }
    finally:
        for s in reversed(services):
            try:
                s.stop()
            except Exception:
                pass
        shutil.rmtree(workdir, ignore_errors=True)

    report(results)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    log(f"figures written to {args.json}")
    for leg, runs in results["legs"].items():
        for r in runs:
            if r["socket_errors"]:
                # wrk leaves timed-out requests out of its latency figures.
                print(f"warning: {leg} {r['clients']}c: socket errors {r['socket_errors']}", file=sys.stderr)
    bad = [
        f"{leg} {r['clients']}c: {r['non_2xx']} non-2xx, socket errors {r['socket_errors']}"
        for leg, runs in results["legs"].items()
        for r in runs
        if r["non_2xx"] or r["requests"] == 0
    ]
    if bad:
        print("legs with failed requests:\n  " + "\n  ".join(bad), file=sys.stderr)
        sys.exit(1)


def report(r):
    legs = r["legs"]

    def run(leg, clients):
        return next((x for x in legs.get(leg, []) if x["clients"] == clients), None)

    rows = []

    def target(name, value, limit, ok, unit=""):
        rows.append((name, value, limit, "met" if ok else "NOT MET"))

    gw0, fl0, pw0 = run("agentgate", 64), run("floor", 64), run("floor_per_worker", 64)
    gw1, fl1, di1 = run("agentgate", 1), run("floor", 1), run("direct", 1)
    target(
        "CPU per request, no cursor (64 clients)",
        f"{gw0['cpu_us_per_request']:.0f} µs (floor {fl0['cpu_us_per_request']:.0f} µs, {gw0['cpu_us_per_request'] / fl0['cpu_us_per_request']:.2f}×)",
        "≤ 1.5× the floor",
        gw0["cpu_us_per_request"] <= 1.5 * fl0["cpu_us_per_request"],
    )
    target(
        "  (vs a floor with a client per worker)",
        f"{gw0['cpu_us_per_request'] / pw0['cpu_us_per_request']:.2f}× ({pw0['cpu_us_per_request']:.0f} µs), req/s {gw0['rps'] / pw0['rps']:.2f}×",
        "(reported)",
        True,
    )
    target(
        "req/s at 64 clients",
        f"{gw0['rps']:.0f} (floor {fl0['rps']:.0f}, {gw0['rps'] / fl0['rps']:.2f}×)",
        "≥ 2/3 of the floor",
        gw0["rps"] >= fl0["rps"] * 2 / 3,
    )
    for kib in (16, 128):
        c = legs[f"agentgate_cursor_{kib}KiB"][0]
        base = run("agentgate", c["clients"]) or gw0
        per_kib = (c["cpu_us_per_request"] - base["cpu_us_per_request"]) / kib
        target(f"extra CPU per KiB of cursor ({kib} KiB)", f"{per_kib:.1f} µs/KiB", "≤ 4 µs/KiB", per_kib <= 4)
    added_gw = gw1["p50_ms"] - di1["p50_ms"]
    added_fl = fl1["p50_ms"] - di1["p50_ms"]
    target(
        "added p50 at 1 client",
        f"{added_gw:.3f} ms (floor {added_fl:.3f} ms)",
        "≤ the floor's + 0.05 ms",
        added_gw <= added_fl + 0.05,
    )
    target(
        "p99 at 64 clients",
        f"{gw0['p99_ms']:.2f} ms (floor {fl0['p99_ms']:.2f} ms, direct {run('direct', 64)['p99_ms']:.2f} ms)",
        "≤ 1.5× the floor",
        gw0["p99_ms"] <= 1.5 * fl0["p99_ms"],
    )
    t = r["ttfe"]
    added = t["agentgate"]["p50_ms"] - t["direct"]["p50_ms"]
    target(
        "added time to first event (p50)",
        f"{added:.3f} ms (max {t['agentgate']['max_ms']:.1f} ms)",
        "≤ 0.5 ms, no 40 ms tail",
        added <= 0.5 and t["agentgate"]["max_ms"] < 40,
    )
    s = r["streams"]
    target(f"RSS with {s['count']} concurrent streams", f"{s['rss_mb']:.1f} MB", "≤ 150 MB (1,000 streams)", s["rss_mb"] <= 150)
    target("idle RSS", f"{r['agentgate_idle_rss_mb']:.1f} MB", "≤ 20 MB", r["agentgate_idle_rss_mb"] <= 20)
    target("RSS at 64 clients", f"{gw0['peak_rss_mb']:.1f} MB", "(reported)", True)
    k = r["soak"]
    target(
        f"RSS growth over a {k['requests']}-request soak",
        f"{k['growth_pct']:+.2f} % ({k['rss_before_mb']:.1f} → {k['rss_after_mb']:.1f} MB)",
        "< 1 %",
        k["growth_pct"] < 1,
    )
    ll = run("litellm", 64)
    if ll:
        target(
            "throughput vs LiteLLM (64 clients)",
            f"{gw0['rps'] / ll['rps']:.0f}× ({ll['rps']:.0f} req/s)",
            "≥ 50×",
            gw0["rps"] >= 50 * ll["rps"],
        )
        target(
            "CPU per request vs LiteLLM",
            f"1/{ll['cpu_us_per_request'] / gw0['cpu_us_per_request']:.0f} ({ll['cpu_us_per_request']:.0f} µs)",
            "≤ 1/50",
            gw0["cpu_us_per_request"] * 50 <= ll["cpu_us_per_request"],
        )
    r["targets"] = [dict(zip(("target", "measured", "goal", "verdict"), row)) for row in rows]

    print("\nlegs (wrk, one thread; CPU = utime+stime of the process tree per request)")
    print(f"{'leg':<26}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}{'RSS MB':>9}")
    for leg, runs in legs.items():
        for x in runs:
            print(
                f"{leg:<26}{x['clients']:>8}{x['rps']:>10.0f}{x['p50_ms'] or 0:>9.3f}{x['p99_ms'] or 0:>9.2f}"
                f"{x['cpu_us_per_request']:>12.1f}{x['peak_rss_mb']:>9.1f}"
            )
    print(f"\n{'target':<46}{'measured':<50}{'goal':<26}verdict")
    for name, value, limit, verdict in rows:
        print(f"{name:<46}{value:<50}{limit:<26}{verdict}")


if __name__ == "__main__":
    main()
