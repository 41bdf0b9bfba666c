#!/usr/bin/env python3
"""Samples a running edge's RSS and its cache contents, to report memory with and without them.

Every 0.5 s until the edge stops answering, writes one line:
    HH:MM:SS  rss_mb  cache_mb  rss_minus_cache_mb  ready_mb
cache_mb is the memory tier + source cache + working copies as the edge's own gauges count
them (/metrics); ready responses share their bodies with the memory tier, so they are shown
apart and not added. Run it beside the peer harness, then take the peak of the fourth
column over the harness's miss phases (their start times are in its log):

    python3 loadtest/edge_memory.py PID 8093 /tmp/edge-memory.txt &
"""
import re
import sys
import time
import urllib.request

GAUGES = [
    "flexphoto_memory_cache_bytes",
    "flexphoto_source_cache_bytes",
    "flexphoto_working_copy_bytes",
    "flexphoto_ready_response_bytes",
]


def main() -> None:
    pid, port, out = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(out, "w") as f:
        while True:
            try:
                with open(f"/proc/{pid}/status") as s:
                    rss = int(re.search(r"VmRSS:\s+(\d+)", s.read()).group(1)) / 1024
                url = f"http://127.0.0.1:{port}/metrics"
                text = urllib.request.urlopen(url, timeout=2).read().decode()
            except (OSError, AttributeError):
                break
            mb = {
                g: float(re.search(rf"^{g} (\S+)", text, re.M).group(1)) / 2**20
                for g in GAUGES
            }
            cache = sum(mb[g] for g in GAUGES[:3])
            f.write(
                f"{time.strftime('%H:%M:%S')} {rss:.1f} {cache:.1f} {rss - cache:.1f} "
                f"{mb[GAUGES[3]]:.1f}\n"
            )
            f.flush()
            time.sleep(0.5)


if __name__ == "__main__":
    main()
