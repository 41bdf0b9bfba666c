#!/usr/bin/env python3
"""Ingest throughput with one, two and three control-plane processes on one Postgres database
and one object store (a shared local directory here; an S3 bucket in production).

For each process count N it creates a fresh Postgres database, starts N `flexphoto serve`
processes (release build) sharing it, uploads `--batch` 4000x3000 JPEGs round-robin through
them as fast as `--conc` clients can, waits until every image is ready, and reports:

- sustained ingest rate (uploads / (last ready - first upload)),
- total CPU seconds of all processes per image (the cost of coordination shows up here),
- how the jobs spread over the processes, and who held the deployment-wide roles.

On a 2-core machine more processes cannot add throughput (the CPU is the limit); the figure
to read is the ratio of CPU per image with N processes to that with one: the overhead of
coordinating through the database. Search is off (`search.model = "none"`) unless
`--search` is given with `QDRANT_URL` set (then every process shares that Qdrant server).

    python3 loadtest/scaleout.py --pg postgres://flexphoto:flexphoto@127.0.0.1/flexphoto_test \
        [--batch 48] [--conc 4] [--processes 1,2,3] [--workers 2] [--search]

Results go to loadtest/results/scaleout-<time>.json.
"""
import argparse, json, os, shutil, subprocess, tempfile, threading, time, uuid
from datetime import datetime
from procstat import api_request, cpu_seconds, free_port, multipart

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN = "bench-admin-key-0123456789"


def request(method, url, body=None, headers=None, timeout=120):
    return api_request(method, url, ADMIN, body, headers, timeout)


def make_corpus(photos_dir, out_dir, n=6):
    photos = sorted(p for p in os.listdir(photos_dir) if p.lower().endswith((".jpg", ".jpeg")))
    out = []
    for i, p in enumerate(photos[:n]):
        dst = os.path.join(out_dir, f"c{i}.jpg")
        subprocess.run(["vips", "thumbnail", os.path.join(photos_dir, p), f"{dst}[Q=92]", "4000",
                        "--height", "3000", "--size", "force"], check=True)
        out.append(open(dst, "rb").read())
    return out


def run(n_proc, args, corpus, pg_url):
    db = "fp_scale_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", pg_url, "-qc", f"CREATE DATABASE {db}"], check=True, capture_output=True)
    db_url = pg_url.rsplit("/", 1)[0] + "/" + db
    shared = tempfile.mkdtemp(prefix="flexphoto-scale-")
    procs, bases = [], []
    env = dict(os.environ, FLEXPHOTO_ADMIN_KEY=ADMIN, FLEXPHOTO_LOG="warn",
               FLEXPHOTO__DATABASE__URL=db_url, FLEXPHOTO__QUEUE__POLL_MS="50",
               FLEXPHOTO__QUEUE__WORKERS=str(args.workers),
               FLEXPHOTO__STORAGE__DIR=os.path.join(shared, "objects"),
               FLEXPHOTO__SEARCH__MODEL="none")
    if args.search:
        env.update(FLEXPHOTO__SEARCH__MODEL="conse", FLEXPHOTO__SEARCH__INDEX="server",
                   FLEXPHOTO__SEARCH__QDRANT_URL=os.environ["QDRANT_URL"],
                   FLEXPHOTO__SEARCH__QDRANT_COLLECTION=db,
                   FLEXPHOTO__SEARCH__MODEL_DIR=os.path.join(ROOT, "models"))
    try:
        for i in range(n_proc):
            port = free_port()
            data = os.path.join(shared, f"p{i}")
            os.makedirs(data)
            log = open(os.path.join(data, "server.log"), "w")
            p = subprocess.Popen([args.binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                                 env=env, stdout=subprocess.PIPE, stderr=log, text=True)
            for line in p.stdout:
                if line.startswith("flexphoto listening"):
                    break
            procs.append(p); bases.append(f"http://127.0.0.1:{port}")
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        ids, lock, errors = [], threading.Lock(), []
        counter = iter(range(args.batch))
        t0 = time.time()

        def client():
            for i in counter:
                body, ct = multipart({"owner": f"scale-{i}"}, "file", corpus[i % len(corpus)])
                s, r = request("POST", f"{bases[i % n_proc]}/v1/images", body, {"Content-Type": ct})
                if s == 201:
                    with lock:
                        ids.append(json.loads(r)["id"])
                else:
                    errors.append((s, r[:200]))

        threads = [threading.Thread(target=client) for _ in range(args.conc)]
        for t in threads: t.start()
        for t in threads: t.join()
        deadline = time.time() + 1800
        while time.time() < deadline:
            s, r = request("GET", f"{bases[0]}/v1/jobs/stats")
            jobs = json.loads(r)["queue"]["jobs"] if s == 200 else {}
            if not jobs.get("queued") and not jobs.get("running"):
                break
            time.sleep(0.25)
        elapsed = time.time() - t0
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
        ready = 0
        for i in ids:
            s, r = request("GET", f"{bases[0]}/v1/images/{i}")
            ready += s == 200 and json.loads(r)["status"] == "ready"
        _, c = request("GET", f"{bases[0]}/v1/cluster")
        roles = {r["role"]: r["holder"]["url"] for r in json.loads(c)["roles"]}
        # Jobs per process, from the metrics each one exports.
        per_proc = []
        for b in bases:
            _, m = request("GET", f"{b}/metrics")
            done = sum(float(l.rsplit(" ", 1)[1]) for l in m.decode().splitlines()
                       if l.startswith("flexphoto_jobs_finished_total{") and 'outcome="done"' in l
                       and 'kind="process"' in l)
            per_proc.append(int(done))
        return {"processes": n_proc, "uploads": len(ids), "ready": ready, "errors": errors[:5],
                "seconds": round(elapsed, 2), "images_per_s": round(ready / elapsed, 3),
                "cpu_s_per_image": round(cpu / max(ready, 1), 3), "jobs_per_process": per_proc,
                "roles": roles}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["psql", pg_url, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True)
        shutil.rmtree(shared, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg", default=os.environ.get("FLEXPHOTO_TEST_PG_URL"))
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--conc", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="queue.workers per process")
    ap.add_argument("--processes", default="1,2,3")
    ap.add_argument("--search", action="store_true", help="embed too, into the Qdrant server at QDRANT_URL")
    ap.add_argument("--photos", default=os.path.join(ROOT, "..", "shared", "fixtures", "photos"))
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "flexphoto"))
    args = ap.parse_args()
    if not args.pg:
        raise SystemExit("--pg (or FLEXPHOTO_TEST_PG_URL) is needed: several processes share Postgres")
    tmp = tempfile.mkdtemp(prefix="flexphoto-corpus-")
    corpus = make_corpus(args.photos, tmp)
    results = []
    for n in [int(x) for x in args.processes.split(",")]:
        r = run(n, args, corpus, args.pg)
        print(json.dumps(r), flush=True)
        results.append(r)
    base = results[0]["cpu_s_per_image"]
    for r in results:
        r["cpu_ratio_to_first"] = round(r["cpu_s_per_image"] / base, 3) if base else None
    out = os.path.join(ROOT, "loadtest", "results", f"scaleout-{datetime.now():%Y%m%dT%H%M%S}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"batch": args.batch, "conc": args.conc, "workers": args.workers, "results": results}, f, indent=2)
    print(f"\n{'procs':>5} {'img/s':>7} {'CPU s/img':>10} {'ratio':>6}  jobs per process")
    for r in results:
        print(f"{r['processes']:>5} {r['images_per_s']:>7} {r['cpu_s_per_image']:>10} {r['cpu_ratio_to_first']:>6}  {r['jobs_per_process']}")
    print(f"written {out}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
