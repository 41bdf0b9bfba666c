-- wrk script for loadtest/edge.py: each thread replays its own slice of a URL list and counts
-- responses by status; done() prints one JSON line prefixed with LOADJSON.
--   wrk -t T -c C -d 20s -s urls.lua http://127.0.0.1:PORT -- LISTFILE T

local threads = {}
local n_threads = 0

function setup(thread)
  thread:set("tid", n_threads)
  n_threads = n_threads + 1
  table.insert(threads, thread)
end

function init(args)
  local all = {}
  for line in io.lines(args[1]) do
    if #line > 0 then all[#all + 1] = line end
  end
  local nt = tonumber(args[2])
  local lo = math.floor(tid * #all / nt) + 1
  local hi = math.floor((tid + 1) * #all / nt)
  if hi < lo then lo, hi = 1, #all end
  reqs = {}
  for i = lo, hi do reqs[#reqs + 1] = wrk.format("GET", all[i]) end
  idx = 0
  statuses = {}
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do merged[k] = (merged[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(merged) do parts[#parts + 1] = string.format('"%d":%d', k, v) end
  io.write(string.format(
    'LOADJSON {"duration_us":%d,"requests":%d,"bytes":%d,"socket_errors":%d,"timeouts":%d,' ..
    '"latency_us":{"p50":%d,"p95":%d,"p99":%d,"max":%d},"statuses":{%s}}\n',
    summary.duration, summary.requests, summary.bytes,
    summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    table.concat(parts, ",")))
end
