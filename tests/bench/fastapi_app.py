"""FastAPI's take on osprey's three routes, run under uvicorn with worker
processes (each loads the three models once):

    uvicorn fastapi_app:app --workers 2 --host 127.0.0.1 --port 8000 --app-dir tests/bench

The handlers read the body on the event loop and run the blocking work
(decode, ONNX Runtime, numpy) in Starlette's thread pool, so a worker keeps
accepting requests while models run. Same JSON answers as osprey.
"""

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from pipeline import BadRequest, Pipelines

app = FastAPI()
pipelines = Pipelines()


@app.exception_handler(BadRequest)
async def bad_request(_request: Request, e: BadRequest):
    status = 415 if e.code == "unsupported_media_type" else 400
    return JSONResponse({"error": {"code": e.code, "message": e.message}}, status_code=status)


@app.post("/v1/detect")
async def detect(request: Request, conf: float = Query(0.25, ge=0.01, le=1.0), iou: float = Query(0.45, ge=0.05, le=0.95)):
    return await run_in_threadpool(pipelines.detect, await request.body(), conf=conf, iou=iou)


@app.post("/v1/detect/fast")
async def detect_fast(request: Request, conf: float = Query(0.4, ge=0.01, le=1.0)):
    return await run_in_threadpool(pipelines.detect_fast, await request.body(), conf=conf)


@app.post("/v1/classify")
async def classify(request: Request, top: int = Query(5, ge=1, le=20)):
    return await run_in_threadpool(pipelines.classify, await request.body(), top=top)


@app.get("/healthz", response_class=PlainTextResponse)
async def healthz():
    return "ok\n"
