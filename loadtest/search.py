#!/usr/bin/env python3
"""Search benchmark for the flexphoto control plane, end to end through the HTTP API.

Starts a release build of `flexphoto serve` (default ConSE model, embedded index) on loopback
with a fresh data dir, ingests real photos (../shared/fixtures labelled + photos, each also
uploaded `--copies` times as re-encoded copies under other owners so the index holds more than
a handful), then measures:

1. embed throughput at ingest: images made ready per second with the embedding step included
   (and the server's CPU seconds per image);
2. text queries (embed + filtered search, as a client sees it): p50/p99 with no filter, with
   an owner filter, and with owner + date range;
3. image queries: `like_image_id` (stored vector) and an uploaded query image (decode + embed
   + search), p50/p99.

Index-size scaling (10k and 100k points, synthetic vectors) is measured by the Rust bench
`cargo bench -p flexphoto-control-plane --bench vector_search`; this script measures what a
client sees with the real model. Results go to loadtest/results/search-<time>.json.

    python3 loadtest/search.py [--queries 200] [--copies 3]

Needs: cargo build --release -p flexphoto-control-plane, scripts/fetch-models, the fixtures.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, threading, time
from datetime import datetime, timezone
from procstat import RssSampler, api_request, cpu_seconds, free_port, multipart

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN = "bench-admin-key-0123456789"
TEXTS = ["a dog", "a cat", "fruit", "a bird", "a bus on a street", "a cup of coffee",
         "horses in a field", "a flower", "a rocket launch at night", "a building",
         "a squirrel", "food", "animals", "a vehicle", "a beach at sunset", "mountains"]


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))], 2) if xs else None


def request(method, url, body=None, headers=None, timeout=120):
    return api_request(method, url, ADMIN, body, headers, timeout)


def corpus(fixtures, copies, tmp):
    files = []
    for d in ("labelled", "photos"):
        for f in sorted(os.listdir(os.path.join(fixtures, d))):
            if f.lower().endswith((".jpg", ".jpeg", ".png")):
                files.append(os.path.join(fixtures, d, f))
    out = []
    for i, f in enumerate(files):
        out.append(open(f, "rb").read())
        for c in range(copies):
            dst = os.path.join(tmp, f"c{i}-{c}.jpg")
            q = 60 + 10 * c
            r = subprocess.run(["vips", "thumbnail", f, f"{dst}[Q={q}]", str(1600 - 200 * c)],
                               capture_output=True)
            if r.returncode == 0:
                out.append(open(dst, "rb").read())
    return out


def timed_queries(base, bodies, n):
    lat = []
    for i in range(n):
        body = bodies[i % len(bodies)]
        t = time.perf_counter()
        s, r = request("POST", f"{base}/v1/search", json.dumps(body).encode(),
                       {"Content-Type": "application/json"})
        lat.append((time.perf_counter() - t) * 1000)
        if s != 200:
            sys.exit(f"search failed: {s} {r[:300]}")
    return {"n": n, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": round(max(lat), 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--fixtures", default=os.path.join(ROOT, "..", "shared", "fixtures"))
    args = ap.parse_args()
    binary = os.path.join(ROOT, "target", "release", "flexphoto")
    if not os.path.exists(binary):
        sys.exit("build first: cargo build --release -p flexphoto-control-plane")
    tmp = tempfile.mkdtemp(prefix="flexphoto-search-bench-")
    data = corpus(args.fixtures, args.copies, tmp)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, FLEXPHOTO_ADMIN_KEY=ADMIN, FLEXPHOTO__QUEUE__POLL_MS="50",
               FLEXPHOTO_LOG="warn", FLEXPHOTO__SEARCH__MODEL_DIR=os.path.join(ROOT, "models"))
    proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir",
                             os.path.join(tmp, "data")], env=env, stdout=subprocess.PIPE,
                            stderr=open(os.path.join(tmp, "server.log"), "w"), text=True)
    for line in proc.stdout:
        if line.startswith("flexphoto listening"):
            break
    rss = RssSampler(proc.pid); rss.start()
    try:
        # Ingest: owners cycle over 10 so an owner filter keeps ~10 %.
        t0, cpu0 = time.time(), cpu_seconds(proc.pid)
        ids = []
        for i, d in enumerate(data):
            body, ct = multipart({"owner": f"owner{i % 10}"}, "file", d)
            s, r = request("POST", f"{base}/v1/images", body, {"Content-Type": ct})
            if s == 201:
                ids.append(json.loads(r)["id"])
        while True:
            s, r = request("GET", f"{base}/v1/jobs/stats")
            jobs = json.loads(r)["queue"]["jobs"]
            if not jobs.get("queued") and not jobs.get("running"):
                break
            time.sleep(0.2)
        ingest_s, ingest_cpu = time.time() - t0, cpu_seconds(proc.pid) - cpu0
        ready = sum(1 for i in ids if json.loads(request("GET", f"{base}/v1/images/{i}")[1])["status"] == "ready")
        now = datetime.now(timezone.utc)
        since = now.replace(year=now.year - 1).isoformat().replace("+00:00", "Z")
        results = {
            "images": len(ids), "ready": ready,
            "ingest": {"seconds": round(ingest_s, 2), "ready_per_s": round(ready / ingest_s, 2),
                       "server_cpu_s_per_image": round(ingest_cpu / max(ready, 1), 3),
                       "note": "whole pipeline (EXIF, 3 variants, hashes, embedding, index write, duplicates) on photos of 0.3-18 MP"},
        }
        n = args.queries
        results["text_no_filter"] = timed_queries(base, [{"text": t, "limit": 10} for t in TEXTS], n)
        results["text_owner"] = timed_queries(
            base, [{"text": t, "owner": f"owner{i % 10}", "limit": 10} for i, t in enumerate(TEXTS)], n)
        results["text_owner_date"] = timed_queries(
            base, [{"text": t, "owner": f"owner{i % 10}", "uploaded_after": since, "limit": 10}
                   for i, t in enumerate(TEXTS)], n)
        results["like_image_owner"] = timed_queries(
            base, [{"like_image_id": ids[i], "owner": f"owner{i % 10}", "limit": 10} for i in range(min(len(ids), 50))], n)
        lat = []
        for i in range(max(n // 4, 10)):
            body, ct = multipart({"owner": f"owner{i % 10}", "limit": "10"}, "image", data[i % len(data)])
            t = time.perf_counter()
            s, r = request("POST", f"{base}/v1/search", body, {"Content-Type": ct})
            lat.append((time.perf_counter() - t) * 1000)
            if s != 200:
                sys.exit(f"image search failed: {s} {r[:300]}")
        results["query_image_owner"] = {"n": len(lat), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                                        "note": "upload + decode + embed + search of a full-size photo"}
        results["rss_peak_mb"] = round(rss.peak / 1024, 1)
    finally:
        rss.stop = True
        proc.terminate(); proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    out = os.path.join(ROOT, "loadtest", "results", f"search-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
