#!/usr/bin/env python3
"""Peak RSS of flagtail with a large backlog and a dead receiver, then the drain once it is back.

Writes N MiB of Flipt audit lines (default 1024), starts flagtail on them with the receiver down
(connections refused) until it has read the whole file into the sink's backlog on disk (or
--down seconds), samples VmHWM/VmRSS, how many bytes flagtail has read (/proc/PID/io rchar) and
the backlog's size, then starts a receiver (Python, answers 204, counts events) and waits until
every event arrived. Batches of 500 events per POST, so the drain takes requests, not hours.

Usage: benches/backlog.py [--bin target/release/flagtail] [--mib 1024] [--down 10]
"""
import argparse, http.server, os, shutil, socket, subprocess, sys, tempfile, threading, time

LINE = ('{"version":"0.2","type":"flag","action":"updated","status":"success","metadata":{"actor":'
        '{"authentication":"token","email":"dev%d@example.com","ip":"10.0.0.%d","name":"Dev"}},"payload":'
        '{"description":"backlog benchmark flag","enabled":true,"key":"flag-%d","name":"Flag %d",'
        '"namespace_key":"default"},"timestamp":"2026-11-23T06:00:00Z"}\n')


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) / 1024
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                out["read"] = int(line.split()[1])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/flagtail")
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--down", type=float, default=300)
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    d = tempfile.mkdtemp(prefix="ftbacklog-")
    log = os.path.join(d, "audit.log")
    target = a.mib * 1024 * 1024
    n = 0
    with open(log, "w") as f:
        size = 0
        chunk = []
        while size < target:
            line = LINE % (n % 50, n % 250, n, n)
            chunk.append(line)
            size += len(line)
            n += 1
            if len(chunk) == 10000:
                f.write("".join(chunk))
                chunk = []
        f.write("".join(chunk))
    print(f"backlog: {n} events, {size / 2**20:.0f} MiB")

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    conf = os.path.join(d, "flagtail.yaml")
    with open(conf, "w") as f:
        f.write(f"""state_dir: {d}/state
admin: {{listen: ""}}
log: {{level: error}}
sources:
  - {{name: bench, file: {log}, format: flipt}}
sinks:
  - name: hook
    url: http://127.0.0.1:{port}/
    concurrency: 2
    max_backoff_duration: 1h
    initial_backoff: 200ms
    batch: {{max_events: 500, linger: 50ms}}
    backlog: {{max_bytes: 8GiB}}
""")
    p = subprocess.Popen([binary, "--config", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    t0 = time.monotonic()
    peak_down = {}
    backlog = os.path.join(d, "state", "backlog", "hook")
    waiting = lambda: sum(os.path.getsize(os.path.join(backlog, f)) for f in os.listdir(backlog)
                          if f.endswith(".seg")) if os.path.isdir(backlog) else 0
    while time.monotonic() - t0 < a.down:
        time.sleep(0.2)
        peak_down = status(p.pid)
        if peak_down["read"] >= size:
            break
    time.sleep(2)
    peak_down = status(p.pid)
    print(f"receiver down {time.monotonic() - t0:.0f}s: peak RSS {peak_down['VmHWM']:.1f} MiB, "
          f"read {peak_down['read'] / 2**20:.1f} of {size / 2**20:.0f} MiB, "
          f"backlog on disk {waiting() / 2**20:.0f} MiB")

    received = [0]
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                received[0] += body.count(b'"version"')
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    t1 = time.monotonic()
    peak = peak_down
    while received[0] < n and p.poll() is None and time.monotonic() - t1 < 3600:
        time.sleep(0.5)
        peak = status(p.pid)
    secs = time.monotonic() - t1
    ok = received[0] >= n
    print(f"drain: {received[0]} of {n} events in {secs:.1f}s ({received[0] / secs:.0f} events/s); "
          f"peak RSS over the whole run {peak['VmHWM']:.1f} MiB")
    p.terminate()
    p.wait(timeout=30)
    server.shutdown()
    shutil.rmtree(d, ignore_errors=True)
    print(f"backlog {size / 2**20:.0f} MiB: peak RSS {peak_down['VmHWM']:.1f} MiB with the receiver down, "
          f"{peak['VmHWM']:.1f} MiB after draining; {'all delivered' if ok else 'NOT all delivered'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
