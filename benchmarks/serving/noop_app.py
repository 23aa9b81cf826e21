"""The no-op baseline of the serving benchmark: the same stack (FastAPI on uvicorn, orjson) doing nothing.

It reads the JSON body and returns a constant JSON answer, so its rate is the ceiling any endpoint on
this stack can reach on this machine.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()
_ANSWER = orjson.dumps({"predictions": [[0.5, 0.5]]})


@app.post("/invocations")
async def invocations(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(_ANSWER, media_type="application/json")
