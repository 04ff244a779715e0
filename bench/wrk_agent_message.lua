-- wrk script: POST /conversations/{id}/agent-message, a new conversation per request.
-- Usage: wrk -t1 -c64 -d5s -s bench/wrk_agent_message.lua http://127.0.0.1:PORT -- PREFIX
-- PREFIX keeps the ids of one run apart from the previous runs'.
local prefix = "wrk"
local counter = 0
local headers = { ["Content-Type"] = "application/json" }
local body = '{"agent_id":"agent-1","message_id":"m-1"}'

function init(args)
  if args[1] then prefix = args[1] end
end

function request()
  counter = counter + 1
  local path = "/conversations/" .. prefix .. "-" .. counter .. "/agent-message"
  return wrk.format("POST", path, headers, body)
end
