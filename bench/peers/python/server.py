"""The Python peer: sse-starlette on uvicorn (uvloop, httptools), one worker.

A queue per subscriber, the way sse-starlette's examples fan out; each event is encoded once
(with sse-starlette's own ServerSentEvent) and the same bytes go to every queue.
Contract: see bench/README.md.
"""

import asyncio
import itertools
import json
import os
import re
import time

import uvicorn
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

# How many events a subscriber may fall behind before it is dropped (as in our server).
CLIENT_BUFFER = 1024
TOPIC = re.compile(r"^[A-Za-z0-9_.-]+$")
READY = ServerSentEvent(data="{}", event="ready", sep="\n").encode()

subscribers: set[asyncio.Queue] = set()
ids = itertools.count(1)


async def events(request: Request) -> EventSourceResponse:
    queue: asyncio.Queue = asyncio.Queue(maxsize=CLIENT_BUFFER)
    subscribers.add(queue)

    async def stream():
        try:
            yield READY
            while True:
                frame = await queue.get()
                if frame is None:
                    return
                yield frame
        finally:
            subscribers.discard(queue)

    return EventSourceResponse(
        stream(), sep="\n", ping=15, headers={"Cache-Control": "no-cache"}
    )


async def publish(request: Request) -> JSONResponse:
    try:
        body = await request.json()
        topic, text = body["topic"], body["text"]
        if not (isinstance(topic, str) and isinstance(text, str) and TOPIC.match(topic)):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": 'expected {"topic": name, "text": string}'}, 400)
    event_id = next(ids)
    data = json.dumps(
        {"id": event_id, "topic": topic, "text": text, "sent_ms": int(time.time() * 1000)},
        separators=(",", ":"),
    )
    frame = ServerSentEvent(data=data, event=topic, id=str(event_id), sep="\n").encode()
    for queue in list(subscribers):
        try:
            queue.put_nowait(frame)
        except asyncio.QueueFull:
            subscribers.discard(queue)
            queue.get_nowait()
            queue.put_nowait(None)  # ends that stream
    return JSONResponse({"id": event_id}, status_code=201)


app = Starlette(
    routes=[
        Route("/api/events", events),
        Route("/api/publish", publish, methods=["POST"]),
    ]
)

if __name__ == "__main__":
    # One worker, the listen backlog as large as the kernel allows (somaxconn is 4096 here,
    # as our server asks for), no access log.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ.get("PORT", "3000")),
        workers=1,
        backlog=4096,
        log_level="warning",
        access_log=False,
    )
