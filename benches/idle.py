#!/usr/bin/env python3
"""Start-up time and idle wake-ups of the real binary.

start-up: from spawning flagtail until it tells systemd READY=1 (every source open, every listener
          bound), read from a datagram socket given as NOTIFY_SOCKET; median of --runs.
idle:     context switches of all its threads (voluntary and involuntary, from /proc/PID/task/*/
          status) over --idle seconds with nothing to read and nothing to send, after a first
          event was delivered and its summary logged (so connections and tasks exist, and the
          summary's timer, armed by that event, has fired). Zero means no timer fires.

The config follows a file, listens on a Unix socket and an HTTP port (journals), serves the
admin endpoint, and delivers to a webhook receiver here that answers 204.

Usage: benches/idle.py [--bin target/release/flagtail] [--idle 60] [--runs 5]
Exit 0 when it could measure.
"""
import argparse, http.server, os, socket, statistics, subprocess, sys, tempfile, threading, time


class Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    got = threading.Event()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        Ok.got.set()

    def log_message(self, *args):
        pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def switches(pid):
    """Context switches so far, by thread."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                out[tid] = sum(int(line.split()[1]) for line in f
                               if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
        except FileNotFoundError:
            pass
    return out


def woke(before, after):
    """Switches between two readings; a thread that ended or began counts as one wake-up at least."""
    n = sum(max(1, after[t] - before[t]) if after[t] != before[t] else 0 for t in after if t in before)
    n += sum(1 for t in before if t not in after) + sum(after[t] or 1 for t in after if t not in before)
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/flagtail")
    ap.add_argument("--idle", type=int, default=60)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    d = tempfile.mkdtemp(prefix="ftidle-")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = os.path.join(d, "audit.log")
    open(log, "w").close()
    conf = os.path.join(d, "idle.yaml")
    with open(conf, "w") as f:
        f.write(f"""state_dir: {d}/state
admin: {{listen: "127.0.0.1:{free_port()}"}}
log: {{level: warn, summary_interval: 1s}}
sources:
  - name: flipt
    file: {log}
  - name: local
    socket: {d}/in.sock
  - name: hooks
    http: 127.0.0.1:{free_port()}
sinks:
  - name: hook
    url: http://127.0.0.1:{server.server_address[1]}/
    signing_secret: s
""")
    notify = os.path.join(d, "notify.sock")
    starts = []
    proc = None
    for run in range(a.runs):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if os.path.exists(notify):
            os.remove(notify)
        sock.bind(notify)
        sock.settimeout(10)
        env = dict(os.environ, NOTIFY_SOCKET=notify)
        t0 = time.monotonic()
        proc = subprocess.Popen([binary, "--config", conf], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            msg = sock.recv(256)
            if msg == b"READY=1":
                break
        starts.append((time.monotonic() - t0) * 1000)
        sock.close()
        if run < a.runs - 1:
            proc.terminate()
            proc.wait()
    # The last one stays: one event through, then idle.
    with open(log, "a") as f:
        f.write('{"version":"0.2","type":"flag","action":"created","status":"success","metadata":{},'
                '"payload":{"key":"idle"},"timestamp":"2026-11-23T06:00:00Z"}\n')
    if not Ok.got.wait(10):
        sys.exit("the event did not arrive")
    # Let the checkpoint be saved and the summary of that event be logged (1 s after it), so what
    # follows is idle.
    time.sleep(3)
    before = switches(proc.pid)
    time.sleep(a.idle)
    after = switches(proc.pid)
    threads = len(after)
    for tid in sorted(set(before) & set(after)):
        if after[tid] != before[tid]:
            with open(f"/proc/{proc.pid}/task/{tid}/comm") as f:
                print(f"  thread {tid} ({f.read().strip()}): {after[tid] - before[tid]} switches")
    proc.terminate()
    proc.wait()
    server.shutdown()
    print(f"start-up to READY=1: median {statistics.median(starts):.1f} ms "
          f"(min {min(starts):.1f}, max {max(starts):.1f}, {a.runs} runs)")
    print(f"idle: {woke(before, after)} context switches in {a.idle} s across {threads} threads "
          f"({len(set(before) - set(after))} ended, {len(set(after) - set(before))} began)")


if __name__ == "__main__":
    main()
