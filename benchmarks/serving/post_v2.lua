-- wrk script: POST the body read from the file named in WRK_BODY; when WRK_HEADER_LENGTH is set, the
-- body is a KServe v2 binary-tensor request whose JSON part has that many bytes.
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
local header_length = os.getenv("WRK_HEADER_LENGTH")
if header_length ~= nil and header_length ~= "" then
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = header_length
else
  wrk.headers["Content-Type"] = "application/json"
end
