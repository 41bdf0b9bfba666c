#!/usr/bin/env python3
"""Cache hits, nginx static against the edge, in alternating rounds, with each server's CPU
split by thread.

At two connections a server's rate depends on where they land: nginx on one worker or two,
the edge's connections on one thread or two. A round runs wrk against nginx, then against the
edge, each for a few seconds, and prints the rates, their ratio and the busiest threads of
each server (CPU ticks of 10 ms during the run), so a comparison can be read with the
placement it had.

Both servers must be running and warm (every URL asked for once on the edge). The URL lists
are the peer harness's (`../shared/bench-peers`, written under /tmp/peers/lists by its runs):

    python3 loadtest/hits_ab.py --nginx-port 42171 --nginx-pids 101,102 \\
        --edge-port 8093 --edge-pid 200 --conc 2 --rounds 5
"""
import argparse
import glob
import os
import re
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "..", "..", "shared", "bench-peers", "wrk_urls.lua")


def thread_ticks(pids):
    """CPU ticks (user + system) of every thread of the given processes."""
    out = {}
    for pid in pids:
        for stat in glob.glob(f"/proc/{pid}/task/*/stat"):
            try:
                text = open(stat).read()
            except OSError:
                continue
            name = text.split("(", 1)[1].rsplit(")", 1)[0]
            fields = text.rsplit(")", 1)[1].split()
            out[stat] = (name, int(fields[11]) + int(fields[12]))
    return out


def run(port, url_list, pids, conc, seconds):
    """One wrk run: its rate and the threads that used CPU, busiest first."""
    before = thread_ticks(pids)
    threads = str(min(conc, 2))
    p = subprocess.run(
        ["wrk", "-t", threads, "-c", str(conc), "-d", f"{seconds}s", "-s", LUA,
         f"http://127.0.0.1:{port}", "--", url_list, threads],
        capture_output=True, text=True, check=True)
    after = thread_ticks(pids)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", p.stdout).group(1))
    busy = sorted(((after[k][1] - before.get(k, (0, 0))[1], after[k][0]) for k in after),
                  reverse=True)
    return rate, [b for b in busy if b[0] > 5]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nginx-port", type=int, required=True)
    ap.add_argument("--nginx-pids", required=True, help="its worker PIDs, comma-separated")
    ap.add_argument("--edge-port", type=int, required=True)
    ap.add_argument("--edge-pid", type=int, required=True)
    ap.add_argument("--lists", default="/tmp/peers/lists")
    ap.add_argument("--conc", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    nginx_pids = [int(p) for p in a.nginx_pids.split(",") if p]
    for i in range(a.rounds):
        n, nb = run(a.nginx_port, f"{a.lists}/nginx-static-hit-c2.txt", nginx_pids, a.conc,
                    a.seconds)
        e, eb = run(a.edge_port, f"{a.lists}/flexphoto-hit-c2.txt", [a.edge_pid], a.conc,
                    a.seconds)
        print(f"round {i} c={a.conc}: nginx {n:.0f} req/s {nb[:2]} | edge {e:.0f} req/s "
              f"{eb[:3]} | edge/nginx {e / n:.2f}", flush=True)


if __name__ == "__main__":
    main()
