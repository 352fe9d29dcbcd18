#!/usr/bin/env python3
"""Throughput of the journal path next to the file path, in one run.

file:    N Flipt lines in a file, read from the beginning.
journal: the same N lines written to a `socket` source by --clients clients at once; every line
         goes through the journal (group commit, fdatasync before a client's lines count).
Both deliver to one receiver here (Python, answers 204, counts events) in batches of 500 events
per POST, so the receiver is not the limit. The clock runs from flagtail's start (file) or the
first client write (journal) until the receiver has all N events.

Usage: benches/journal.py [--bin target/release/flagtail] [--events 200000] [--clients 4] [--runs 3]
Prints one line per run and the medians; exit 0 when it could measure.
"""
import argparse, http.server, json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

LINE = ('{"version":"0.2","type":"flag","action":"updated","status":"success","metadata":{"actor":'
        '{"authentication":"token","email":"dev%d@example.com","ip":"10.0.0.%d","name":"Dev"}},"payload":'
        '{"description":"journal benchmark flag","enabled":true,"key":"flag-%d","name":"Flag %d",'
        '"namespace_key":"default"},"timestamp":"2026-11-23T06:00:00Z"}\n')


class Counter(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0
    done = threading.Event()
    want = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        n = body.count(b'"version"')
        Counter.count += n
        if Counter.count >= Counter.want:
            Counter.done.set()
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def config(d, source, port):
    path = os.path.join(d, "flagtail.yaml")
    with open(path, "w") as f:
        f.write(f"""state_dir: {d}/state
admin: {{listen: ""}}
journal: {{max_bytes: 1GiB}}
sources:
  - name: bench
{source}    format: flipt
sinks:
  - name: hook
    url: http://127.0.0.1:{port}/
    batch: {{max_events: 500}}
    concurrency: 2
""")
    return path


def run_once(binary, n, clients, port, lines):
    Counter.count, Counter.want = 0, n
    Counter.done.clear()
    d = tempfile.mkdtemp(prefix="ftjournal-")
    try:
        # File path.
        log = os.path.join(d, "audit.log")
        with open(log, "w") as f:
            f.write("".join(lines))
        cfg = config(d, f"    file: {log}\n", port)
        start = time.time()
        p = subprocess.Popen([binary, "--config", cfg], stderr=subprocess.DEVNULL)
        if not Counter.done.wait(600):
            sys.exit("file run did not finish")
        file_rate = n / (time.time() - start)
        p.terminate(); p.wait()
        shutil.rmtree(os.path.join(d, "state"))

        # Journal path.
        Counter.count = 0
        Counter.done.clear()
        sock = os.path.join(d, "in.sock")
        cfg = config(d, f"    socket: {sock}\n", port)
        p = subprocess.Popen([binary, "--config", cfg], stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.01)
        # Each client's bytes are made before the clock starts: joining and encoding 200,000 lines
        # in four Python threads (one GIL) took longer than flagtail's part.
        parts = ["".join(lines[i::clients]).encode() for i in range(clients)]
        answers = []

        def client(part):
            c = socket.socket(socket.AF_UNIX)
            c.connect(sock)
            c.sendall(part)
            c.shutdown(socket.SHUT_WR)
            answers.append(c.recv(100))
            c.close()

        start = time.time()
        threads = [threading.Thread(target=client, args=(part,)) for part in parts]
        for t in threads:
            t.start()
        if not Counter.done.wait(600):
            sys.exit("journal run did not finish")
        journal_rate = n / (time.time() - start)
        for t in threads:
            t.join()
        p.terminate(); p.wait()
        ok = sum(int(a.split()[1]) for a in answers if a.startswith(b"ok "))
        if ok != n:
            sys.exit(f"the socket acknowledged {ok} of {n} lines")
        return file_rate, journal_rate
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/flagtail")
    ap.add_argument("--events", type=int, default=200000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    lines = [LINE % (i % 50, i % 250, i, i) for i in range(a.events)]
    files, journals = [], []
    for r in range(a.runs):
        f, j = run_once(binary, a.events, a.clients, port, lines)
        files.append(f)
        journals.append(j)
        print(f"run {r + 1}: file {f:,.0f} events/s, journal {j:,.0f} events/s ({j / f:.2f}x)", flush=True)
    f, j = statistics.median(files), statistics.median(journals)
    print(f"median of {a.runs}: file {f:,.0f} events/s, socket -> journal {j:,.0f} events/s "
          f"({j / f:.2f}x of the file path), {a.events} events, {a.clients} clients, batches of 500")


if __name__ == "__main__":
    main()
