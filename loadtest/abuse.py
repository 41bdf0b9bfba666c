#!/usr/bin/env python3
"""Abuse load test for flexphoto-edge: N abusive clients send the request shapes that once
stalled an edge (a thin image enlarged, a 300-frame GIF enlarged, a 20-MP fill with blur and
sharpen, `fit=outside`, slow-but-legal 49-MP outputs, unknown formats, floods of distinct
misses) while normal clients fetch cached thumbnails (hits) and new small sizes (misses).

It runs the normal traffic twice, without and with the abusers, on an edge on its default
settings (`--config /dev/null`), and reports for the normal traffic p50/p99 latency and the
error rate (5xx other than 503 with Retry-After, and 429), and for the abusers (from their own
address, 127.0.0.2) what they got back. Targets (issue 10): under abuse, normal
cached requests keep p99 under 10 ms, and normal misses keep succeeding (no 5xx other than
503 with Retry-After). Results go to loadtest/results/abuse-<time>.json.

    cargo build --release -p flexphoto-edge
    python3 loadtest/abuse.py --duration 20 --abusers 4
"""
import argparse, http.client, json, os, random, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(__file__))
from procstat import free_port, wait_for_port, RssSampler, cpu_seconds  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_origin(dir):
    """Writes the test images with the vips CLI: a photo-like JPEG, small JPEGs, a thin PNG,
    a 300-frame GIF and an SVG."""
    def vips(*a):
        subprocess.run(["vips", *a], check=True, capture_output=True)
    vips("gaussnoise", f"{dir}/noise.v", "5472", "3648", "--mean", "128", "--sigma", "40")
    vips("copy", f"{dir}/noise.v", f"{dir}/big.jpg[Q=85]")
    for i in range(40):
        vips("gaussnoise", f"{dir}/s.v", "800", "600", "--mean", str(60 + i), "--sigma", "30")
        vips("copy", f"{dir}/s.v", f"{dir}/small{i}.jpg[Q=85]")
    vips("black", f"{dir}/thin.v", "1", "1200")
    vips("copy", f"{dir}/thin.v", f"{dir}/thin.png")
    vips("gaussnoise", f"{dir}/frames.v", "316", str(316 * 300))
    vips("cast", f"{dir}/frames.v", f"{dir}/frames8.v", "uchar")
    vips("copy", f"{dir}/frames8.v", f"{dir}/anim300.gif[page_height=316]")
    with open(f"{dir}/drawing.svg", "w") as f:
        f.write('<svg xmlns="http://www.w3.org/2000/svg" width="9000" height="9000"/>')
    for f in ("noise.v", "s.v", "thin.v", "frames.v", "frames8.v"):
        os.remove(f"{dir}/{f}")


ABUSIVE = [
    "/img/thin.png?w=8192&fit=contain",
    "/img/anim300.gif?w=8192&fit=contain&fmt=webp",
    "/img/big.jpg?w=8192&h=8192&fit=fill&blur=100&sharpen=100&fmt=png",
    "/img/thin.png?w=8192&h=10&fit=outside",
    "/img/drawing.svg?w=4000",
    "/img/big.jpg?w={n}&h=7000&fit=fill&sharpen=40&fmt=png",  # legal but slow: hits its deadline
    "/img/big.jpg?w={n}&fmt=avif&q=99",  # a flood of distinct expensive misses
]


class Stats:
    def __init__(self):
        self.lat = {"hit": [], "miss": []}
        self.status = {"hit": {}, "miss": {}, "abuse": {}}
        self.lock = threading.Lock()

    def add(self, kind, status, ms):
        with self.lock:
            if kind in self.lat and status == 200:
                self.lat[kind].append(ms)
            d = self.status[kind]
            d[status] = d.get(status, 0) + 1


# Abusers connect from their own loopback address, so the edge sees them as another client
# than the normal traffic (one address each side, as two users behind two NATs would be).
NORMAL_SOURCE, ABUSER_SOURCE = "127.0.0.1", "127.0.0.2"


def get(conn_holder, port, path, timeout=35, source=NORMAL_SOURCE):
    """One GET over a kept-alive connection (reopened when it breaks): (status, ms, headers)."""
    for attempt in range(2):
        try:
            if conn_holder[0] is None:
                conn_holder[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                                            source_address=(source, 0))
            t = time.perf_counter()
            conn_holder[0].request("GET", path, headers={"Accept": "image/webp,*/*"})
            r = conn_holder[0].getresponse()
            r.read()
            return r.status, (time.perf_counter() - t) * 1000, dict(r.getheaders())
        except (OSError, http.client.HTTPException):
            try:
                conn_holder[0].close()
            except Exception:
                pass
            conn_holder[0] = None
    return 599, 0.0, {}


def normal_client(port, stats, stop, rng, cached):
    """Mostly cached thumbnails, sometimes a size never asked for."""
    conn = [None]
    n = 0
    while not stop.is_set():
        n += 1
        if rng.random() < 0.85:
            kind, path = "hit", rng.choice(cached)
        else:
            kind, path = "miss", f"/img/small{rng.randrange(40)}.jpg?w={rng.randrange(100, 400)}&fmt=webp"
        status, ms, h = get(conn, port, path)
        if status == 503 and "Retry-After" not in h and "retry-after" not in h:
            status = 5031  # a 503 without Retry-After counts as a failure
        stats.add(kind, status, ms)


def abusive_client(port, stats, stop, rng):
    conn = [None]
    while not stop.is_set():
        path = rng.choice(ABUSIVE).format(n=rng.randrange(5000, 7000))
        status, _, _ = get(conn, port, path, source=ABUSER_SOURCE)
        stats.add("abuse", status, 0)


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return round(v[min(len(v) - 1, int(len(v) * p / 100))], 2)


def phase(port, pid, abusers, normals, duration, cached, seed):
    stats, stop = Stats(), threading.Event()
    rng = random.Random(seed)
    threads = [threading.Thread(target=normal_client, args=(port, stats, stop, random.Random(rng.random()), cached))
               for _ in range(normals)]
    threads += [threading.Thread(target=abusive_client, args=(port, stats, stop, random.Random(rng.random())))
                for _ in range(abusers)]
    rss = RssSampler(pid); rss.start()
    cpu0 = cpu_seconds(pid)
    for t in threads:
        t.start()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join()
    rss.stop = True
    out = {"abusers": abusers, "normal_clients": normals, "seconds": duration,
           "server_cpu_s": round(cpu_seconds(pid) - cpu0, 2), "peak_rss_mb": round(rss.peak / 1024, 1)}
    for kind in ("hit", "miss"):
        total = sum(stats.status[kind].values())
        # Failures of normal traffic: any 5xx but a 503 with Retry-After, and 429 (its own
        # share was not exhausted by it: the abusers come from another address).
        bad = sum(n for s, n in stats.status[kind].items() if (s >= 500 and s != 503) or s == 429)
        out[kind] = {"requests": total, "per_s": round(total / duration, 1),
                     "p50_ms": pct(stats.lat[kind], 50), "p99_ms": pct(stats.lat[kind], 99),
                     "statuses": {str(k): v for k, v in sorted(stats.status[kind].items())},
                     "error_rate": round(bad / total, 4) if total else None}
    out["abuse"] = {"statuses": {str(k): v for k, v in sorted(stats.status["abuse"].items())}}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--abusers", type=int, default=4)
    ap.add_argument("--normals", type=int, default=4)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/flexphoto-edge"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="flexphoto-abuse-")
    origin = os.path.join(work, "origin"); os.makedirs(origin)
    make_origin(origin)
    port = free_port()
    edge = subprocess.Popen([args.binary, "--config", "/dev/null", "--origin-dir", origin,
                             "--listen", f"127.0.0.1:{port}", "--cache-dir", os.path.join(work, "cache")],
                            env=dict(os.environ, RUST_LOG="error"))
    try:
        wait_for_port(port)
        cached = [f"/img/small{i}.jpg?w=200&fmt=webp" for i in range(40)]
        conn = [None]
        for p in cached:
            get(conn, port, p)
        results = {"machine_cores": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                   "baseline": phase(port, edge.pid, 0, args.normals, args.duration, cached, 1),
                   "under_abuse": phase(port, edge.pid, args.abusers, args.normals, args.duration, cached, 2)}
        u = results["under_abuse"]
        results["targets"] = {
            "hit_p99_under_10ms": (u["hit"]["p99_ms"] or 1e9) < 10,
            "misses_keep_succeeding": (u["miss"]["statuses"].get("200", 0) > 0
                                       and (u["miss"]["error_rate"] or 0) == 0),
        }
    finally:
        edge.terminate(); edge.wait(timeout=30)
    os.makedirs(os.path.join(ROOT, "loadtest", "results"), exist_ok=True)
    out = os.path.join(ROOT, "loadtest", "results", f"abuse-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
