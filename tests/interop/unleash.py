#!/usr/bin/env python3
"""Interop with a real Unleash: its webhook integration posts to flagtail's http source.

Installs what it needs if missing: PostgreSQL from Debian's packages, unleash-server 6.10.1 from
npm (cached in ~/.cache/flagtail-interop; 7+ needs a newer Node than the machine's Node 20).
Starts PostgreSQL and Unleash on loopback with a fresh database, flagtail with an `http` source
(`format: unleash`, an `auth_token`) and a Flipt-signed webhook sink to a receiver here, creates
the webhook integration once through Unleash's admin API (its `authorization` parameter is
flagtail's token), then creates, enables and archives a feature, and checks that the receiver got
each event, mapped and signed. Prints `N passed, M failed` last; exit 0 only if all passed.

Usage: unleash.py --bin target/debug/flagtail
"""
import argparse, hashlib, hmac, http.server, json, os, shutil, socket, subprocess, sys, tempfile
import threading, time, urllib.error, urllib.request

UNLEASH_VERSION = "6.10.1"
CACHE = os.path.expanduser(f"~/.cache/flagtail-interop/unleash-{UNLEASH_VERSION}")
TOKEN = "interop-token-5c2f"
SECRET = "interop-s3cret"
PATIENCE = 120


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=False, capture_output=True, text=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout=PATIENCE):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            got = check()
            if got:
                return got
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"interop: timed out waiting for {what}")


def ensure_postgres():
    if not shutil.which("pg_ctlcluster"):
        sh("apt-get update -qq")
        r = sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql")
        if r.returncode != 0:
            sys.exit("interop: cannot install postgresql: " + r.stderr[-500:])
    clusters = sh("pg_lsclusters -h").stdout.split()
    if len(clusters) < 2:
        sys.exit("interop: no PostgreSQL cluster")
    version, name = clusters[0], clusters[1]
    sh(f"pg_ctlcluster {version} {name} start")
    port = int(clusters[2])
    wait_for("PostgreSQL", lambda: sh(f"runuser -u postgres -- psql -p {port} -tAc 'select 1'").stdout.strip() == "1")
    return port


def psql(port, sql):
    r = sh(f"runuser -u postgres -- psql -p {port} -v ON_ERROR_STOP=1 -tAc \"{sql}\"")
    if r.returncode != 0:
        sys.exit(f"interop: psql {sql!r}: {r.stderr}")


def ensure_unleash():
    marker = os.path.join(CACHE, "node_modules", "unleash-server", "package.json")
    if not os.path.exists(marker):
        os.makedirs(CACHE, exist_ok=True)
        sh("npm init -y", cwd=CACHE)
        r = sh(f"npm install --no-audit --no-fund unleash-server@{UNLEASH_VERSION}", cwd=CACHE)
        if r.returncode != 0:
            sys.exit("interop: npm install unleash-server failed: " + r.stderr[-800:])
    return CACHE


class Receiver(http.server.BaseHTTPRequestHandler):
    got = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with Receiver.lock:
            Receiver.got.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def api(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/debug/flagtail")
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    results = []

    def check(name, ok, detail=""):
        results.append(ok)
        print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"), flush=True)

    pg_port = ensure_postgres()
    modules = ensure_unleash()
    db = f"flagtail_interop_{os.getpid()}"
    psql(pg_port, "DO \\$\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'flagtail') "
                  "THEN CREATE ROLE flagtail LOGIN PASSWORD 'flagtail'; END IF; END \\$\\$;")
    psql(pg_port, f"CREATE DATABASE {db} OWNER flagtail")
    work = tempfile.mkdtemp(prefix="flagtail-interop-")
    procs = []
    try:
        receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        rport = receiver.server_address[1]

        ingest = free_port()
        config = os.path.join(work, "flagtail.yaml")
        with open(config, "w") as f:
            f.write(f"""state_dir: {work}/state
admin: {{listen: ""}}
sources:
  - name: unleash
    http: 127.0.0.1:{ingest}
    path: /unleash
    auth_token: {TOKEN}
    format: unleash
sinks:
  - name: audit
    url: http://127.0.0.1:{rport}/hook
    signing_secret: {SECRET}
    initial_backoff: 100ms
""")
        ft_log = open(os.path.join(work, "flagtail.log"), "w")
        procs.append(subprocess.Popen([binary, "--config", config], stdout=subprocess.DEVNULL, stderr=ft_log))

        uport = free_port()
        starter = os.path.join(work, "start-unleash.js")
        with open(starter, "w") as f:
            f.write(f"""const unleash = require('unleash-server');
unleash.start({{
  db: {{user: 'flagtail', password: 'flagtail', host: '127.0.0.1', port: {pg_port}, database: '{db}', ssl: false}},
  server: {{port: {uport}}},
  authentication: {{type: 'none'}},
  logLevel: 'error',
}}).catch((e) => {{ console.error(e); process.exit(1); }});
""")
        env = dict(os.environ, NODE_PATH=os.path.join(modules, "node_modules"))
        unleash_log = open(os.path.join(work, "unleash.log"), "w")
        procs.append(subprocess.Popen(["node", starter], env=env, stdout=unleash_log, stderr=subprocess.STDOUT))
        base = f"http://127.0.0.1:{uport}"
        started = time.time()
        wait_for("Unleash /health", lambda: api(base, "GET", "/health")[0] == 200)
        print(f"Unleash {UNLEASH_VERSION} ready in {time.time() - started:.1f}s", flush=True)

        # The integration, once, before any event (6.10 keeps a stale copy of one changed later).
        status, body = api(base, "POST", "/api/admin/addons", {
            "provider": "webhook", "enabled": True,
            "parameters": {"url": f"http://127.0.0.1:{ingest}/unleash", "authorization": f"Bearer {TOKEN}"},
            "events": ["feature-created", "feature-environment-enabled", "feature-archived"],
            "projects": [], "environments": [],
        })
        check("webhook integration created", status in (200, 201), f"{status} {body[:300]!r}")

        name = f"interop-{os.getpid()}"
        status, body = api(base, "POST", "/api/admin/projects/default/features",
                           {"name": name, "description": "flagtail interop", "type": "release"})
        check("feature created", status in (200, 201), f"{status} {body[:300]!r}")
        status, body = api(base, "POST", f"/api/admin/projects/default/features/{name}/environments/development/on")
        check("feature enabled in development", status in (200, 201, 202), f"{status} {body[:300]!r}")
        status, body = api(base, "DELETE", f"/api/admin/projects/default/features/{name}")
        check("feature archived", status in (200, 202), f"{status} {body[:300]!r}")

        def three():
            with Receiver.lock:
                return list(Receiver.got) if len(Receiver.got) >= 3 else None
        got = wait_for("three events at the receiver", three, timeout=90)
        events = []
        for headers, body in got:
            sig = {k.lower(): v for k, v in headers.items()}.get("x-flipt-webhook-signature", "")
            want = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            check("Flipt signature verifies", hmac.compare_digest(sig, want), f"{sig} != {want}")
            events.append(json.loads(body))
        seen = {(e["type"], e["action"], e["payload"].get("key")) for e in events}
        for want in [("flag", "created", name), ("flag", "updated", name), ("flag", "deleted", name)]:
            check(f"received {want[0]}:{want[1]} {want[2]}", want in seen, f"got {sorted(seen)}")
        enabled = [e for e in events if e["action"] == "updated"]
        check("enabled event carries environment and enabled",
              bool(enabled) and enabled[0]["payload"].get("environment") == "development"
              and enabled[0]["payload"].get("enabled") is True, f"{enabled}")
        check("actor and timestamp mapped",
              all(e["status"] == "success" and e["timestamp"] and "actor" in e["metadata"] for e in events),
              f"{events}")
        with open(os.path.join(work, "flagtail.log")) as f:
            log = f.read()
        check("the token is never logged", TOKEN not in log, "token in flagtail's log")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if procs and procs[0].returncode not in (0, None):
            results.append(False)
            print(f"FAIL flagtail exited {procs[0].returncode}; log in {work}/flagtail.log")
        psql(pg_port, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    failed = results.count(False)
    if failed:
        print(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{results.count(True)} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
