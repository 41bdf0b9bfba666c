#!/usr/bin/env python3
"""Load test for flexphoto-edge: cache-miss, cache-hit and overload phases over real photos.

Starts a release build of the edge on loopback against a copy of the photo corpus, drives it
with wrk (loadtest/urls.lua), samples the edge's RSS, reads its /metrics for hit ratios, and
writes loadtest/results/edge-<time>.json and .svg.

    python3 loadtest/edge.py [--photos DIR] [--duration 20] [--conc 2,8]

Needs: wrk (apt-get install wrk), a release build (cargo build --release -p flexphoto-edge).
"""
import argparse, json, math, os, random, re, shutil, socket, subprocess, sys, tempfile, threading, time
from procstat import RssSampler, free_port, rss_kb, wait_for_port  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))








def metrics(port):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r'^(\w+)(\{[^}]*\})?\s+([0-9.e+-]+)$', line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def wrk(port, urls, conc, duration, tag):
    with tempfile.NamedTemporaryFile("w", delete=False, suffix=".txt") as f:
        f.write("\n".join(urls) + "\n"); path = f.name
    threads = min(conc, 2)
    cmd = ["wrk", "-t", str(threads), "-c", str(conc), "-d", f"{duration}s", "--timeout", "30s",
           "-s", os.path.join(ROOT, "loadtest", "urls.lua"), f"http://127.0.0.1:{port}", "--", path, str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    os.unlink(path)
    line = next((l for l in out.splitlines() if l.startswith("LOADJSON ")), None)
    if not line:
        sys.exit(f"wrk gave no summary for {tag}:\n{out}")
    r = json.loads(line[len("LOADJSON "):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def svg(phases, path):
    w, row = 760, 46
    h = 60 + row * len(phases)
    max_rps = max(p["rps"] for p in phases) or 1
    max_p99 = max(p["latency_us"]["p99"] for p in phases) or 1
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
         '<text x="10" y="20" font-size="15" font-weight="bold">flexphoto-edge load test</text>',
         '<text x="230" y="42" fill="#2a6">requests/s (log scale)</text><text x="500" y="42" fill="#c52">p99 latency</text>']
    for i, p in enumerate(phases):
        y = 55 + i * row
        s.append(f'<text x="10" y="{y + 16}">{p["name"]}</text>')
        bw = 250 * math.log10(p["rps"] + 1) / math.log10(max_rps + 1)  # log scale: misses and hits differ 1000x
        s.append(f'<rect x="230" y="{y}" width="{bw:.1f}" height="16" fill="#2a6"/>'
                 f'<text x="{234 + bw:.1f}" y="{y + 13}">{p["rps"]:.0f}</text>')
        lw = 200 * p["latency_us"]["p99"] / max_p99
        s.append(f'<rect x="500" y="{y}" width="{lw:.1f}" height="16" fill="#c52"/>'
                 f'<text x="{504 + lw:.1f}" y="{y + 13}">{p["latency_us"]["p99"] / 1000:.1f} ms</text>')
        st = ", ".join(f"{k}: {v}" for k, v in sorted(p["statuses"].items()))
        s.append(f'<text x="230" y="{y + 30}" fill="#555">{st}; peak RSS {p["peak_rss_mb"]:.0f} MB; hit ratio {p["hit_ratio"]:.2f}</text>')
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s))


STORM_ENV = {
    "FLEXPHOTO_EDGE__CACHE__MEMORY_MB": "64",
    "FLEXPHOTO_EDGE__CACHE__SOURCE_MB": "64",
    "FLEXPHOTO_EDGE__CACHE__WORKING_MB": "64",
    "FLEXPHOTO_EDGE__LIMITS__INFLIGHT_SOURCE_MB": "128",
}


def storm_phase(args, work, phases, rng):
    """16-way misses over distinct 24-megapixel JPEGs against an edge with small caches, to
    check that RSS stays under the configured memory (caches + in-flight budget)."""
    big = os.path.join(work, "big")
    os.makedirs(big, exist_ok=True)
    srcs = sorted(f for f in os.listdir(args.photos) if f.lower().endswith(".jpg"))
    for i in range(16):
        src = os.path.join(args.photos, srcs[i % len(srcs)])
        out = os.path.join(big, f"big{i:02d}.jpg")
        subprocess.run(["vips", "thumbnail", src, out + "[Q=90]", "6000", "--height", "4000", "--size", "force"],
                       check=True, capture_output=True)
        if i >= len(srcs):  # make the repeats distinct files
            subprocess.run(["vips", "flip", out, out + ".tmp.jpg[Q=90]", "horizontal"], check=True, capture_output=True)
            os.replace(out + ".tmp.jpg", out)
    port = free_port()
    env = dict(os.environ, RUST_LOG="warn", **STORM_ENV)
    edge = subprocess.Popen([args.binary, "--config", "/dev/null", "--listen", f"127.0.0.1:{port}", "--origin-dir", big], env=env)
    try:
        wait_for_port(port)
        urls = [f"/img/big{rng.randrange(16):02d}.jpg?w={rng.randint(300,1200)}&fmt=webp" for _ in range(5000)]
        sampler = RssSampler(edge.pid); sampler.start()
        r = wrk(port, urls, 16, max(10, args.duration), "storm")
        sampler.stop = True; sampler.join()
        cap_mb = sum(int(v) for v in STORM_ENV.values())
        r.update(name="storm 24MP c=16", conc=16, peak_rss_mb=sampler.peak / 1024, hit_ratio=0.0,
                 configured_memory_mb=cap_mb, origin_fetches=None)
        phases.append(r)
        print(f'storm 24MP c=16               {r["rps"]:9.1f} req/s  p99 {r["latency_us"]["p99"]/1000:7.1f} ms  '
              f'statuses {r["statuses"]}  peak RSS {r["peak_rss_mb"]:.0f} MB (configured caches + budget {cap_mb} MB)')
    finally:
        edge.terminate(); edge.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", default=os.path.join(ROOT, "..", "shared", "fixtures", "photos"))
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--conc", default="2,8")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "flexphoto-edge"))
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} missing: cargo build --release -p flexphoto-edge")
    work = tempfile.mkdtemp(prefix="flexphoto-load-")
    origin = os.path.join(work, "photos")
    os.makedirs(origin)
    photos = sorted(f for f in os.listdir(args.photos) if f.lower().endswith(".jpg")) if os.path.isdir(args.photos) else []
    for f in photos:
        shutil.copy(os.path.join(args.photos, f), origin)
    if not photos:
        sys.exit(f"no JPEG photos in {args.photos}")
    port = free_port()
    env = dict(os.environ, RUST_LOG="warn", FLEXPHOTO_EDGE__TRANSFORM__QUEUE="16")
    edge = subprocess.Popen([args.binary, "--config", "/dev/null", "--listen", f"127.0.0.1:{port}",
                             "--origin-dir", origin, "--cache-dir", os.path.join(work, "cache")], env=env)
    try:
        wait_for_port(port)
        rng = random.Random(7)
        concs = [int(c) for c in args.conc.split(",")]
        phases = []

        def run(name, urls, conc, duration):
            before = metrics(port)
            sampler = RssSampler(edge.pid); sampler.start()
            r = wrk(port, urls, conc, duration, name)
            sampler.stop = True; sampler.join()
            after = metrics(port)
            delta = lambda k: after.get(k, 0) - before.get(k, 0)
            hits = delta('flexphoto_cache_lookups_total{result="hit",tier="memory"}') + delta('flexphoto_cache_lookups_total{result="hit",tier="disk"}')
            misses = delta('flexphoto_cache_lookups_total{result="miss",tier="memory"}') - delta('flexphoto_cache_lookups_total{result="hit",tier="disk"}')
            r.update(name=name, conc=conc, peak_rss_mb=sampler.peak / 1024,
                     hit_ratio=hits / max(1, hits + misses), origin_fetches=delta("flexphoto_origin_fetches_total"))
            phases.append(r)
            print(f'{name:28s} {r["rps"]:9.1f} req/s  p50 {r["latency_us"]["p50"]/1000:7.1f} ms  p95 {r["latency_us"]["p95"]/1000:7.1f} ms  '
                  f'p99 {r["latency_us"]["p99"]/1000:7.1f} ms  statuses {r["statuses"]}  peak RSS {r["peak_rss_mb"]:.0f} MB  hit ratio {r["hit_ratio"]:.2f}')

        fmts = ["jpeg", "webp", "jpeg", "avif", "png"]
        for c in concs:
            miss = [f"/img/{rng.choice(photos)}?w={rng.randint(500,700)}&h={rng.randint(500,700)}&fit=inside&fmt=jpeg&q=80" for _ in range(20000)]
            run(f"miss jpeg c={c}", miss, c, args.duration)
        mixed = [f"/img/{rng.choice(photos)}?w={rng.randint(200,900)}&h={rng.randint(200,900)}&fmt={rng.choice(fmts)}" for _ in range(20000)]
        run(f"miss mixed formats c=2", mixed, 2, args.duration)
        hot = [f"/img/{p}?w=512&h=512&fit=inside&fmt=jpeg&q=80" for p in photos]
        for u in hot:
            subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}{u}"])
        for c in concs:
            run(f"hit c={c}", hot, c, max(5, args.duration // 2))
        burst = [f"/img/{rng.choice(photos)}?w={rng.randint(1500,2500)}&blur=5&fmt=webp" for _ in range(5000)]
        run("overload burst c=64", burst, 64, max(5, args.duration // 2))
        storm_phase(args, work, phases, rng)
        os.makedirs(os.path.join(ROOT, "loadtest", "results"), exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = os.path.join(ROOT, "loadtest", "results", f"edge-{stamp}")
        with open(out + ".json", "w") as f:
            json.dump({"photos": photos, "cores": os.cpu_count(), "phases": phases}, f, indent=2)
        svg(phases, out + ".svg")
        print(f"wrote {out}.json and {out}.svg")
    finally:
        edge.terminate(); edge.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
