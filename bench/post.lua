-- wrk script: each request submits one no-op task.
wrk.method = "POST"
wrk.body   = '{"title": "bench", "kind": "noop"}'
wrk.headers["Content-Type"] = "application/json"
