"""The naive baseline: Flask + gunicorn + SentenceTransformer, as a first attempt usually looks.

    gunicorn -w 2 --preload -b 127.0.0.1:PORT bench.naive_server:app
"""

import os

from flask import Flask, jsonify, request
from sentence_transformers import SentenceTransformer

model = SentenceTransformer(os.environ["NAIVE_MODEL"], device="cpu")
app = Flask(__name__)


@app.post("/embed")
def embed():
    return jsonify({"embeddings": model.encode(request.get_json()["message"]).tolist()})


@app.get("/health")
def health():
    return "ok"
