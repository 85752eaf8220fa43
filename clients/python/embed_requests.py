"""smls from Python with requests. Usage: python clients/python/embed_requests.py [URL]"""

import os
import sys

import requests

url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SMLS_URL", "http://127.0.0.1:8000")

# Repeated form fields: one text each.
answer = requests.post(f"{url}/embed", data={"message": ["Hello world!", "How are you today?"]}, timeout=60)
answer.raise_for_status()
body = answer.json()
print(f"model: {body['model']}, vectors: {len(body['embeddings'])}, dimension: {body['dimension']}")

# JSON with options: int8 codes, as base64 (one string per vector).
answer = requests.post(f"{url}/embed", json={"message": "Hello world!", "precision": "int8", "encoding": "base64"}, timeout=60)
answer.raise_for_status()
print(f"int8 base64: {answer.json()['embeddings'][0][:16]}...")

# Search a stored document.
hits = requests.get(f"{url}/documents/demo/search", params={"q": "the sea at night", "k": 3}, timeout=60).json()["results"]
for hit in hits:
    print(f"{hit['score']:.3f}  {hit['text'][:70]}")

# Several models: list them, pick the last embedding model by name.
listing = requests.get(f"{url}/models", timeout=60).json()
print("models: " + ", ".join(f"{m['name']} ({m['kind']})" for m in listing["models"]))
name = [m["name"] for m in listing["models"] if m["kind"] == "embedding"][-1]
answer = requests.post(f"{url}/embed", json={"message": "Hello world!", "model": name}, timeout=60)
answer.raise_for_status()
print(f"model {name}: dimension {answer.json()['dimension']}")

# Reranking: by default a cross-encoder if one is served (else the default model's cosine),
# then with the default embedding model named.
documents = ["Stock markets fell sharply.", "Cats sleep up to sixteen hours a day.", "Paris is the capital of France."]
for model in (None, listing["default"]):
    ranked = requests.post(f"{url}/rerank", json={"query": "How long do cats sleep?", "documents": documents, "model": model}, timeout=60)
    ranked.raise_for_status()
    body = ranked.json()
    print(f"rerank ({body['model']}, {body['scorer']}): " + " ".join(str(r["index"]) for r in body["results"]))

# Counting tokens without running the model: the default model's ids for a text.
counted = requests.post(f"{url}/tokenize", json={"text": "Hello world!", "return_tokens": False}, timeout=60).json()["texts"][0]
print(f"tokens: {counted['count']} {counted['ids']}")
