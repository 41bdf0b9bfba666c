"""Process helpers shared by the load tests: free loopback ports, waiting for a server, and
peak-RSS sampling, CPU time, authenticated HTTP requests and multipart upload bodies."""
import os, socket, threading, time, uuid
import urllib.error, urllib.request


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_for_port(port, tries=200):
    """Waits until something accepts connections on 127.0.0.1:`port` (up to ~10 s)."""
    for _ in range(tries):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)


def rss_kb(pid):
    """Resident set size of `pid` in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    """Samples a process's RSS every `interval` seconds and keeps the peak (KiB)."""
    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True); self.pid = pid; self.interval = interval; self.peak = 0; self.stop = False
    def run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_kb(self.pid)); time.sleep(self.interval)


def cpu_seconds(pid):
    """User + system CPU seconds `pid` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def api_request(method, url, key, body=None, headers=None, timeout=120):
    """Sends one request with `Authorization: Bearer key`; returns (status, body bytes),
    HTTP errors included."""
    h = {"Authorization": f"Bearer {key}"}
    h.update(headers or {})
    req = urllib.request.Request(url, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def multipart(fields, file_field, data, content_type="image/jpeg"):
    """A multipart/form-data body with text `fields` and `data` as the file `file_field`;
    (body, Content-Type header)."""
    b = "benchBoundary" + uuid.uuid4().hex
    out = b""
    for k, v in fields.items():
        out += f"--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
    out += (f"--{b}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"p.jpg\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return out, f"multipart/form-data; boundary={b}"
