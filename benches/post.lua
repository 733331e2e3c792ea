-- wrk script of benches/load.sh: POSTs the AdmissionReview given as the first argument.
-- A second argument "close" asks for a new connection per request (Connection: close).
function init(args)
  local file = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/json"
  if args[2] == "close" then
    wrk.headers["Connection"] = "close"
  end
end
