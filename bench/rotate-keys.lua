-- wrk script: every request carries the next API key, x-api-key: key-0 .. key-(N-1), round robin.
-- N is the argument after `--` on wrk's command line. The requests are built once, in init,
-- so that the load generator does no string work per request.
local requests = {}
local next_index = 0

function init(args)
  local count = tonumber(args[1]) or 1
  for k = 0, count - 1 do
    requests[k + 1] = wrk.format("GET", "/", { ["x-api-key"] = "key-" .. k })
  end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
