#!/usr/bin/env python3
"""Ingest benchmark for the flexphoto control plane: uploads/s sustained, upload->ready latency
and API read latency while the workers are saturated, on SQLite and (when a URL is given)
Postgres.

Starts a release build of `flexphoto serve` on loopback with a fresh data dir (and a fresh
Postgres database), makes a corpus of 12-megapixel JPEGs from the real photos in
../shared/fixtures/photos (resized with the `vips` CLI to 4000x3000 at Q92 with 4:2:0 chroma as
phones write them, or full chroma with `--subsample 444`; EXIF kept; `--native` uploads the
JPEGs of `--photos` as they are instead, e.g. web-sized photos), and runs three phases:

1. saturate: `--batch` uploads as fast as `--conc` clients can send them, while another
   client reads (GET /v1/images/{id} and a list page) the whole time, until every upload is
   ready. Sustained rate = uploads / (last ready - first upload): what the workers keep up
   with, since accepting an upload is much cheaper than processing it.
2. half rate: open-loop uploads at half the sustained rate for `--duration` seconds;
   upload->ready latency p50/p99 from each image's uploaded_at/processed_at.
3. RSS: the server's peak resident memory over the run.

Each upload uses its own owner so that the corpus (a few photos repeated) is never refused as a
duplicate. Busy (503) and rate-limited (429) uploads are retried after a second, as the
server's Retry-After asks, and counted. Results go to loadtest/results/ingest-<time>.json and a
summary is printed.

    python3 loadtest/ingest.py [--batch 60] [--duration 30] [--conc 4] [--workers N] [--subsample 420|444] [--photos DIR [--native]] [--pg postgres://...]

Needs: a release build (cargo build --release -p flexphoto-control-plane), the `vips` CLI
(libvips-tools), the fixtures folder.
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time, uuid
from datetime import datetime
from procstat import RssSampler, api_request, cpu_seconds, multipart

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN = "bench-admin-key-0123456789"


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]






def request(method, url, body=None, headers=None, timeout=120):
    return api_request(method, url, ADMIN, body, headers, timeout)


def make_corpus(photos_dir, out_dir, n=6, subsample="420"):
    # Phones and most cameras write 4:2:0 chroma at Q 90-95; `--subsample 444` measures the
    # heavier full-chroma files some cameras and editors write.
    mode = "on" if subsample == "420" else "off"
    files = sorted(f for f in os.listdir(photos_dir) if f.endswith(".jpg"))
    corpus = []
    for f in files:
        src = os.path.join(photos_dir, f)
        dst = os.path.join(out_dir, f"12mp-{f}")
        r = subprocess.run(["vips", "thumbnail", src, f"{dst}[Q=92,subsample_mode={mode}]", "4000", "--height", "3000",
                            "--size", "both", "--crop", "centre"], capture_output=True)
        if r.returncode == 0:
            corpus.append(open(dst, "rb").read())
        if len(corpus) >= n:
            break
    if not corpus:
        sys.exit("could not make a corpus (is the vips CLI installed?)")
    return corpus


def parse_t(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def run_backend(name, binary, corpus, args, pg_url=None):
    port = socket.socket(); port.bind(("127.0.0.1", 0)); p = port.getsockname()[1]; port.close()
    base = f"http://127.0.0.1:{p}"
    data_dir = tempfile.mkdtemp(prefix="flexphoto-bench-")
    env = dict(os.environ, FLEXPHOTO_ADMIN_KEY=ADMIN, FLEXPHOTO__QUEUE__POLL_MS="50",
               FLEXPHOTO_LOG="warn")
    if args.workers is not None:
        env["FLEXPHOTO__QUEUE__WORKERS"] = str(args.workers)
    db_name = None
    if pg_url:
        db_name = "fp_bench_" + uuid.uuid4().hex[:12]
        subprocess.run(["psql", pg_url, "-c", f"CREATE DATABASE {db_name}"], check=True, capture_output=True)
        env["FLEXPHOTO__DATABASE__URL"] = pg_url.rsplit("/", 1)[0] + "/" + db_name
    log = open(os.path.join(data_dir, "server.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{p}", "--data-dir", data_dir],
                            env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    for line in proc.stdout:
        if line.startswith("flexphoto listening"):
            break
    rss = RssSampler(proc.pid); rss.start()
    ids, lock = [], threading.Lock()
    upload_errors = []
    retries = [0]

    def upload(i):
        body, ct = multipart({"owner": f"bench-{name}-{i}"}, "file", corpus[i % len(corpus)])
        for attempt in range(31):
            s, r = request("POST", f"{base}/v1/images", body, {"Content-Type": ct})
            # Busy or rate-limited: retry as a client should (the server's Retry-After is 1 s).
            if s not in (429, 503) or attempt == 30:
                break
            with lock:
                retries[0] += 1
            time.sleep(1)
        if s == 201:
            with lock:
                ids.append(json.loads(r)["id"])
        else:
            upload_errors.append((s, r[:200]))

    def wait_all(these, timeout=900):
        # Watch the queue (one cheap request) rather than every image, so the benchmark does
        # not steal the CPU it measures; then read each image once.
        deadline = time.time() + timeout
        while time.time() < deadline:
            s, r = request("GET", f"{base}/v1/jobs/stats")
            jobs = json.loads(r)["queue"]["jobs"] if s == 200 else {}
            if not jobs.get("queued") and not jobs.get("running"):
                break
            time.sleep(0.25)
        done = {}
        for i in these:
            s, r = request("GET", f"{base}/v1/images/{i}")
            if s == 200:
                v = json.loads(r)
                if v["status"] in ("ready", "failed"):
                    done[i] = v
        return done

    # Phase 1: saturate, with reads running alongside.
    read_lat, stop_reads = [], threading.Event()

    def reader():
        while not stop_reads.is_set():
            with lock:
                some = ids[-1] if ids else None
            if some is None:
                time.sleep(0.05); continue
            t = time.perf_counter(); request("GET", f"{base}/v1/images/{some}")
            read_lat.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter(); request("GET", f"{base}/v1/images?owner=bench-{name}-0&limit=20")
            read_lat.append((time.perf_counter() - t) * 1000)
            time.sleep(0.02)

    rt = threading.Thread(target=reader, daemon=True); rt.start()
    counter = [0]
    t0, cpu0 = time.time(), cpu_seconds(proc.pid)

    def client():
        while True:
            with lock:
                i = counter[0]; counter[0] += 1
            if i >= args.batch:
                return
            upload(i)

    cs = [threading.Thread(target=client) for _ in range(args.conc)]
    [c.start() for c in cs]; [c.join() for c in cs]
    accepted_s = time.time() - t0
    sat_ids = list(ids)
    done = wait_all(sat_ids)
    sat_cpu = cpu_seconds(proc.pid) - cpu0
    stop_reads.set(); rt.join()
    finished = [parse_t(v["processed_at"]) for v in done.values() if v.get("processed_at")]
    started = [parse_t(v["uploaded_at"]) for v in done.values()]
    sustained = len(done) / (max(finished) - min(started)) if finished else 0.0
    sat_lat = [parse_t(v["processed_at"]) - parse_t(v["uploaded_at"]) for v in done.values() if v.get("processed_at")]

    # Phase 2: open loop at half the sustained rate.
    rate = max(sustained / 2, 0.2)
    ids.clear()
    n2 = max(int(rate * args.duration), 4)
    t1 = time.time(); threads = []
    for k in range(n2):
        target = t1 + k / rate
        time.sleep(max(0, target - time.time()))
        th = threading.Thread(target=upload, args=(100000 + k,)); th.start(); threads.append(th)
    [th.join() for th in threads]
    done2 = wait_all(list(ids))
    lat2 = [parse_t(v["processed_at"]) - parse_t(v["uploaded_at"]) for v in done2.values() if v.get("processed_at")]
    failed = sum(1 for v in list(done.values()) + list(done2.values()) if v["status"] == "failed")

    rss.stop = True
    proc.terminate(); proc.wait(timeout=60)
    if db_name:
        subprocess.run(["psql", pg_url, "-c", f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"], capture_output=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "backend": name,
        "workers": args.workers if args.workers is not None else "config default",
        "chroma_subsampling": args.subsample,
        "upload_clients": args.conc,
        "saturate": {
            "uploads": len(sat_ids), "accept_seconds": round(accepted_s, 2),
            "accepted_per_s": round(len(sat_ids) / accepted_s, 2),
            "sustained_ready_per_s": round(sustained, 2),
            "server_cpu_s_per_image": round(sat_cpu / max(len(done), 1), 3),
            "upload_to_ready_p50_s": pct(sat_lat, 50), "upload_to_ready_p99_s": pct(sat_lat, 99),
            "read_p50_ms": pct(read_lat, 50), "read_p99_ms": pct(read_lat, 99), "reads": len(read_lat),
        },
        "half_rate": {
            "rate_per_s": round(rate, 2), "uploads": n2,
            "upload_to_ready_p50_s": pct(lat2, 50), "upload_to_ready_p99_s": pct(lat2, 99),
        },
        "failed_images": failed,
        "upload_errors": len(upload_errors),
        "upload_retries": retries[0],
        "upload_error_sample": [(s, r.decode("utf-8", "replace")) for s, r in upload_errors[:3]],
        "peak_rss_mb": round(rss.peak / 1024, 1),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--conc", type=int, default=4)
    ap.add_argument("--batch", type=int, default=60)
    ap.add_argument("--workers", type=int, default=None,
                    help="queue.workers (default: the config's)")
    ap.add_argument("--subsample", choices=["420", "444"], default="420",
                    help="chroma subsampling of the generated 12-MP JPEGs")
    ap.add_argument("--photos", default=os.path.join(ROOT, "..", "shared", "fixtures", "photos"))
    ap.add_argument("--native", action="store_true",
                    help="upload the JPEGs in --photos as they are instead of 12-MP remakes")
    ap.add_argument("--pg", default=os.environ.get("FLEXPHOTO_TEST_PG_URL"))
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "flexphoto"))
    args = ap.parse_args()
    if not os.path.isdir(args.photos):
        print(f"SKIP: {args.photos} is missing"); return
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} missing: cargo build --release -p flexphoto-control-plane")
    with tempfile.TemporaryDirectory() as tmp:
        if args.native:
            # The JPEGs as they are (web-sized photos), not 12-MP remakes.
            corpus = [open(os.path.join(args.photos, f), "rb").read()
                      for f in sorted(os.listdir(args.photos)) if f.lower().endswith((".jpg", ".jpeg"))]
            if not corpus:
                sys.exit(f"no JPEGs in {args.photos}")
        else:
            corpus = make_corpus(args.photos, tmp, subsample=args.subsample)
        mp = [len(c) for c in corpus]
        results = {"time": datetime.now().isoformat(timespec="seconds"), "corpus": {
            "photos": len(corpus), "megapixels": "native" if args.native else 12,
            "bytes_mean": int(statistics.mean(mp))},
            "cpus": os.cpu_count(), "runs": []}
        backends = [("sqlite", None)] + ([("postgres", args.pg)] if args.pg else [])
        for name, url in backends:
            print(f"== {name}", flush=True)
            r = run_backend(name, args.binary, corpus, args, url)
            print(json.dumps(r, indent=1), flush=True)
            results["runs"].append(r)
    os.makedirs(os.path.join(ROOT, "loadtest", "results"), exist_ok=True)
    out = os.path.join(ROOT, "loadtest", "results", f"ingest-{datetime.now():%Y%m%d-%H%M%S}.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {out}")
    print("targets: sustained >= 8/s; half-rate p50 < 1.5 s, p99 < 5 s; reads p99 < 20 ms")


if __name__ == "__main__":
    main()
