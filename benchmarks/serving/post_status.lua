-- wrk script: POST the JSON body read from the file named in WRK_BODY and count the answers by status
-- (200 answered, 503 refused, anything else), summed over wrk's threads and printed in done().
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, refused, other = 0, 0, 0
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 503 then
    refused = refused + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local o, r, x = 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok")
    r = r + t:get("refused")
    x = x + t:get("other")
  end
  io.write(string.format("STATUS ok=%d refused=%d other=%d\n", o, r, x))
end
