-- wrk script: each request submits a batch of 1,000 no-op tasks.
local tasks = {}
for i = 1, 1000 do tasks[i] = '{"title": "bench", "kind": "noop"}' end
wrk.method = "POST"
wrk.body   = '{"tasks": [' .. table.concat(tasks, ",") .. ']}'
wrk.headers["Content-Type"] = "application/json"
