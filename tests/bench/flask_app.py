"""The seeds' stack: a Flask app serving osprey's three routes, run under
gunicorn with sync workers (each worker loads the three models once):

    gunicorn --workers 2 --bind 127.0.0.1:8000 --chdir tests/bench flask_app:app

Same body (raw image bytes) and the same JSON answers as osprey.
"""

from flask import Flask, jsonify, request

from pipeline import BadRequest, Pipelines

app = Flask(__name__)
pipelines = Pipelines()


@app.errorhandler(BadRequest)
def bad_request(e):
    status = 415 if e.code == "unsupported_media_type" else 400
    return jsonify(error={"code": e.code, "message": e.message}), status


@app.post("/v1/detect")
def detect():
    args = request.args
    return pipelines.detect(
        request.get_data(), conf=args.get("conf", 0.25, type=float), iou=args.get("iou", 0.45, type=float)
    )


@app.post("/v1/detect/fast")
def detect_fast():
    return pipelines.detect_fast(request.get_data(), conf=request.args.get("conf", 0.4, type=float))


@app.post("/v1/classify")
def classify():
    return pipelines.classify(request.get_data(), top=request.args.get("top", 5, type=int))


@app.get("/healthz")
def healthz():
    return "ok\n"
