#!/usr/bin/env python3
"""Lifecycle benchmarks (release builds):

  policy  Evaluating the tiering policy over N synthetic images on Postgres: a fresh database
          migrated by `flexphoto migrate`, filled with SQL (N images over 100 owners and two
          years, four objects each, daily traffic for a tenth of them), then the time of a
          full evaluation, `flexphoto tier --dry-run --summary --json` (every image decided,
          the totals and saving the cost report shows), and of the full listing,
          `flexphoto tier --dry-run --json` (every move streamed out). Each is the whole
          command: start, connect, the storage report, the policy. Target: under 10 s at
          N = 1,000,000.

  moves   Objects moved per second between two buckets of the S3 test server: `--images`
          uploads through `flexphoto serve`, then `flexphoto tier` queues them all cold and
          the service's workers move them; the figure is objects (and MB) moved per second
          from the queueing to the last image's switch.

  hits    The cost of access counting on the edge's hit path: cache hits of one image at
          c=2 and c=8 with `wrk`, the edge alternately with and without access statistics
          (pushing to a real control plane), three rounds each, reported as req/s and the
          ratio in the same run. Target: within 3 %.

    python3 loadtest/tiering.py policy --pg postgres://flexphoto:flexphoto@127.0.0.1/flexphoto_test [--n 1000000]
    python3 loadtest/tiering.py moves --images 40   # needs FLEXPHOTO_TEST_S3_* (scripts/test sets them)
    python3 loadtest/tiering.py hits [--duration 10]

Results go to loadtest/results/tiering-<mode>-<time>.json.
"""
import argparse, hashlib, json, os, shutil, subprocess, sys, tempfile, threading, time, uuid
from datetime import datetime
from procstat import api_request, cpu_seconds, free_port, multipart, wait_for_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN = "bench-admin-key-0123456789"
BIN = os.path.join(ROOT, "target", "release", "flexphoto")
EDGE = os.path.join(ROOT, "target", "release", "flexphoto-edge")


def save(mode, result):
    out = os.path.join(ROOT, "loadtest", "results", f"tiering-{mode}-{datetime.now():%Y%m%dT%H%M%S}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    print(f"written {out}")


def psql(url, sql):
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)


def drop_database(url, db):
    """Drops a benchmark database. An autovacuum worker may still be in it after the fill
    (FORCE cannot end it without superuser rights), so this retries for a while."""
    for _ in range(60):
        r = subprocess.run(["psql", url, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return
        time.sleep(2)
    print(f"could not drop {db}: {r.stderr.strip()}", file=sys.stderr)


def policy(args):
    db = "fp_tierbench_" + uuid.uuid4().hex[:10]
    psql(args.pg, f"CREATE DATABASE {db}")
    url = args.pg.rsplit("/", 1)[0] + "/" + db
    env = dict(os.environ, FLEXPHOTO__DATABASE__URL=url, FLEXPHOTO__SEARCH__MODEL="none",
               FLEXPHOTO_LOG="warn")
    data = tempfile.mkdtemp(prefix="flexphoto-tierbench-")
    try:
        subprocess.run([BIN, "migrate", "--data-dir", data], env=env, check=True, capture_output=True)
        n = args.n
        t = time.time()
        psql(url, f"""
            INSERT INTO images (id, owner, uploaded_at, original_key, declared_mime, status, created_at, updated_at, bytes, last_accessed_at)
            SELECT md5(i::text)::uuid, 'owner' || (i % 100), now() - (i % 730) * interval '1 day',
                   'k/' || i || '-original.jpg', 'image/jpeg', 'ready', now(), now(), 3000000,
                   CASE WHEN i % 10 = 0 THEN now() - (i % 20) * interval '1 day' END
            FROM generate_series(1, {n}) i;
            INSERT INTO image_objects (image_id, kind, key, bytes)
            SELECT md5(i::text)::uuid, k.kind, 'k/' || i || '-' || k.kind, k.bytes
            FROM generate_series(1, {n}) i,
                 (VALUES ('original', 3000000), ('full', 600000), ('medium', 150000), ('thumb', 15000)) k(kind, bytes);
            INSERT INTO access_daily (image_id, day, requests, bytes, edge_hits)
            SELECT md5(i::text)::uuid, current_date - d, (i + d) % 7, 100000, 0
            FROM generate_series(10, {n}, 10) i, generate_series(0, 9) d;
            ANALYZE;""")
        fill = time.time() - t
        def timed(extra):
            t = time.time()
            r = subprocess.run([BIN, "tier", "--dry-run", "--json", *extra, "--data-dir", data],
                               env=env, check=True, capture_output=True, text=True)
            return time.time() - t, json.loads(r.stdout)
        totals_runs, listing_runs = [], []
        for _ in range(args.rounds):
            # The evaluation the cost report and `--summary` run: every image decided, totals.
            took, summary = timed(["--summary"])
            totals_runs.append(took)
            # The full listing: every move streamed out as JSON.
            took, plan = timed([])
            listing_runs.append(took)
        moves = plan["plan"]["moves"]
        assert len(moves) == summary["totals"]["images_to_cold"] + summary["totals"]["images_to_hot"]
        save("policy", {"images": n, "fill_seconds": round(fill, 1),
                        "evaluation_seconds": [round(x, 2) for x in totals_runs],
                        "best_seconds": round(min(totals_runs), 2),
                        "full_listing_seconds": [round(x, 2) for x in listing_runs],
                        "best_full_listing_seconds": round(min(listing_runs), 2),
                        "listed_moves": len(moves),
                        "to_cold": summary["what_if"]["images_to_cold"],
                        "bytes_to_cold": summary["what_if"]["bytes_to_cold"],
                        "monthly_saving_usd": round(summary["what_if"]["monthly_saving"], 2)})
    finally:
        drop_database(args.pg, db)
        shutil.rmtree(data, ignore_errors=True)


def start_serve(env, data, extra_args=()):
    port = free_port()
    log = open(os.path.join(data, "server.log"), "w")
    p = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, *extra_args],
                         env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    for line in p.stdout:
        if line.startswith("flexphoto listening"):
            break
    return p, f"http://127.0.0.1:{port}"


def request(method, url, body=None, headers=None):
    return api_request(method, url, ADMIN, body, headers)


def upload(base, owner, data):
    body, ct = multipart({"owner": owner}, "file", data)
    s, r = request("POST", f"{base}/v1/images", body, {"Content-Type": ct})
    assert s == 201, r
    return json.loads(r)["id"]


def moves(args):
    ep = os.environ.get("FLEXPHOTO_TEST_S3_ENDPOINT")
    if not ep:
        raise SystemExit("FLEXPHOTO_TEST_S3_* must point at an S3 server (scripts/test starts one)")
    ak, sk = os.environ["FLEXPHOTO_TEST_S3_ACCESS_KEY"], os.environ["FLEXPHOTO_TEST_S3_SECRET_KEY"]
    hot, cold = "tierbench-hot-" + uuid.uuid4().hex[:6], "tierbench-cold-" + uuid.uuid4().hex[:6]
    for b in (hot, cold):
        # CreateBucket, signed with SigV4 by curl.
        # The empty body's SHA-256 (servers such as s3s require the header).
        subprocess.run(["curl", "-sf", "-X", "PUT", "--aws-sigv4", "aws:amz:us-east-1:s3",
                        "-H", "x-amz-content-sha256: " + hashlib.sha256(b"").hexdigest(),
                        "--user", f"{ak}:{sk}", f"{ep}/{b}"], check=True)
    data = tempfile.mkdtemp(prefix="flexphoto-tiermoves-")
    env = dict(os.environ, FLEXPHOTO_ADMIN_KEY=ADMIN, FLEXPHOTO_LOG="warn", FLEXPHOTO__SEARCH__MODEL="none",
               FLEXPHOTO__QUEUE__POLL_MS="50", FLEXPHOTO__STORAGE__KIND="s3",
               FLEXPHOTO__STORAGE__S3__ENDPOINT=ep, FLEXPHOTO__STORAGE__S3__BUCKET=hot,
               FLEXPHOTO__STORAGE__S3__ACCESS_KEY=ak, FLEXPHOTO__STORAGE__S3__SECRET_KEY=sk,
               FLEXPHOTO__TIERING__ENABLED="false", FLEXPHOTO__TIERING__COLD_AFTER_DAYS="0",
               FLEXPHOTO__TIERING__COLD_MAX_HITS="1", FLEXPHOTO__TIERING__COLD__KIND="s3",
               FLEXPHOTO__TIERING__COLD__S3__ENDPOINT=ep, FLEXPHOTO__TIERING__COLD__S3__BUCKET=cold,
               FLEXPHOTO__TIERING__COLD__S3__ACCESS_KEY=ak, FLEXPHOTO__TIERING__COLD__S3__SECRET_KEY=sk,
               FLEXPHOTO__TIERING__OBJECTS='["original", "full", "medium"]')
    p, base = start_serve(env, data)
    try:
        photos = os.path.join(ROOT, "..", "shared", "fixtures", "photos")
        jpgs = sorted(os.path.join(photos, f) for f in os.listdir(photos) if f.lower().endswith(".jpg"))
        blobs = [open(j, "rb").read() for j in jpgs]
        ids = [upload(base, f"o{i}", blobs[i % len(blobs)]) for i in range(args.images)]
        while True:
            s, r = request("GET", f"{base}/v1/jobs/stats")
            jobs = json.loads(r)["queue"]["jobs"]
            if not jobs.get("queued") and not jobs.get("running"):
                break
            time.sleep(0.2)
        s, r = request("GET", f"{base}/v1/cost")
        moving = sum(x["bytes"] for x in json.loads(r)["storage"] if x["kind"] in ("original", "full", "medium"))
        cpu0 = cpu_seconds(p.pid)
        t = time.time()
        subprocess.run([BIN, "tier", "--data-dir", data, "--json"], env=env, check=True, capture_output=True)
        while True:
            s, r = request("GET", f"{base}/v1/images?owner=o{args.images - 1}&storage_tier=cold")
            s2, r2 = request("GET", f"{base}/v1/jobs/stats")
            jobs = json.loads(r2)["queue"]["jobs"]
            if not jobs.get("queued") and not jobs.get("running"):
                break
            time.sleep(0.1)
        took = time.time() - t
        cold_count = 0
        for i in range(args.images):
            s, r = request("GET", f"{base}/v1/images?owner=o{i}&storage_tier=cold")
            cold_count += len(json.loads(r)["items"])
        objects = cold_count * 3
        save("moves", {"images": args.images, "moved_images": cold_count, "objects": objects,
                       "seconds": round(took, 2), "objects_per_s": round(objects / took, 1),
                       "mb_per_s": round(moving / 1e6 / took, 1),
                       "server_cpu_s": round(cpu_seconds(p.pid) - cpu0, 2),
                       "workers": 4})
    finally:
        p.terminate(); p.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def wrk(url, conc, duration):
    r = subprocess.run(["wrk", "-t", str(min(conc, 2)), "-c", str(conc), "-d", f"{duration}s", "--latency", url],
                       capture_output=True, text=True, check=True)
    for line in r.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return 0.0


def hits(args):
    data = tempfile.mkdtemp(prefix="flexphoto-hitbench-")
    env = dict(os.environ, FLEXPHOTO_ADMIN_KEY=ADMIN, FLEXPHOTO_LOG="warn", FLEXPHOTO__SEARCH__MODEL="none")
    cp, base = start_serve(env, data)
    origin = os.path.join(data, "origin")
    os.makedirs(origin)
    photos = os.path.join(ROOT, "..", "shared", "fixtures", "photos")
    first = sorted(f for f in os.listdir(photos) if f.lower().endswith(".jpg"))[0]
    shutil.copy(os.path.join(photos, first), os.path.join(origin, "p.jpg"))
    s, r = request("POST", f"{base}/v1/keys", json.dumps({"name": "bench edge", "role": "edge"}).encode(),
                   {"Content-Type": "application/json"})
    key = json.loads(r)["key"]
    results = {"on": {2: [], 8: []}, "off": {2: [], 8: []}, "cpu_ms_per_req": {"on": [], "off": []}}
    try:
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                port = free_port()
                e = dict(os.environ, RUST_LOG="warn")
                if mode == "on":
                    e.update(FLEXPHOTO_EDGE__ACCESS__PUSH_URL=base, FLEXPHOTO_EDGE__ACCESS__KEY=key,
                             FLEXPHOTO_EDGE__ACCESS__INTERVAL_SECS="2")
                edge = subprocess.Popen([EDGE, "--config", "/dev/null", "--origin-dir", origin,
                                         "--listen", f"127.0.0.1:{port}"], env=e,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_for_port(port)
                url = f"http://127.0.0.1:{port}/img/p.jpg?w=300&fmt=jpeg"
                subprocess.run(["curl", "-s", "-o", "/dev/null", url])
                for c in (2, 8):
                    wrk(url, c, 2)  # warm
                    cpu0 = cpu_seconds(edge.pid)
                    rps = wrk(url, c, args.duration)
                    cpu = cpu_seconds(edge.pid) - cpu0
                    results[mode][c].append(rps)
                    results["cpu_ms_per_req"][mode].append(cpu * 1000 / max(rps * args.duration, 1))
                edge.terminate(); edge.wait(30)
        summary = {}
        for c in (2, 8):
            on, off = max(results["on"][c]), max(results["off"][c])
            summary[f"c{c}"] = {"off_rps": round(off), "on_rps": round(on), "ratio": round(on / off, 3)}
        summary["cpu_ms_per_req"] = {m: round(min(v), 4) for m, v in results["cpu_ms_per_req"].items()}
        s, r = request("GET", f"{base}/v1/cluster")
        summary["pushed_requests"] = sum(e["requests"] for e in json.loads(r)["edges"])
        save("hits", {"rounds": args.rounds, "duration": args.duration, "raw": results, "summary": summary})
    finally:
        cp.terminate(); cp.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("policy")
    a.add_argument("--pg", default=os.environ.get("FLEXPHOTO_TEST_PG_URL"))
    a.add_argument("--n", type=int, default=1_000_000)
    a.add_argument("--rounds", type=int, default=3)
    b = sub.add_parser("moves")
    b.add_argument("--images", type=int, default=40)
    c = sub.add_parser("hits")
    c.add_argument("--duration", type=int, default=10)
    c.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.mode == "policy":
        if not args.pg:
            raise SystemExit("--pg (or FLEXPHOTO_TEST_PG_URL) is needed")
        policy(args)
    elif args.mode == "moves":
        moves(args)
    else:
        hits(args)


if __name__ == "__main__":
    main()
