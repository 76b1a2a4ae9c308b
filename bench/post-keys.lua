-- wrk script: POST <path> with the body in <file>, every request carrying the next API key,
-- x-api-key: key-0 .. key-(N-1), round robin. Arguments after `--`: N, path, body file.
-- The requests are built once, in init, so that the load generator does no work per request.
local requests = {}
local next_index = 0

function init(args)
  local count = tonumber(args[1]) or 1
  local path = args[2] or "/"
  local file = assert(io.open(args[3], "rb"))
  local body = file:read("*a")
  file:close()
  for k = 0, count - 1 do
    local headers = { ["x-api-key"] = "key-" .. k, ["content-type"] = "application/json" }
    requests[k + 1] = wrk.format("POST", path, headers, body)
  end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
