"""/rerank through the clients of other servers, unchanged: Cohere's (v1 and v2) and Infinity's.

Usage: python clients/python/rerank_clients.py [URL]   (pip install cohere infinity-client)
"""

import os
import sys

import cohere
from infinity_client import Client
from infinity_client.api.default import rerank
from infinity_client.models import RerankInput

url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SMLS_URL", "http://127.0.0.1:8000")
key = os.environ.get("SMLS_API_KEY", "none")  # smls needs none unless SMLS_API_KEY is set; Cohere's client insists on one
query = "How long do cats sleep?"
documents = ["Stock markets fell sharply.", "Cats sleep up to sixteen hours a day.", "Paris is the capital of France."]

# Cohere's v1 client calls {base_url}/v1/rerank; documents may be strings or {"text": ...}.
co = cohere.Client(base_url=url, api_key=key)
v1 = co.rerank(query=query, documents=[{"text": d} for d in documents], top_n=2, return_documents=True)
print("cohere v1: " + ", ".join(f"{r.index} {r.document.text[:20]!r}" for r in v1.results))

# Cohere's v2 client calls /v2/rerank; its model field names a served model.
default = co.rerank(query=query, documents=documents).model  # smls says which model ranked (an extra field)
v2 = cohere.ClientV2(base_url=url, api_key=key).rerank(model=default, query=query, documents=documents)
print("cohere v2: " + " ".join(str(r.index) for r in v2.results))

# Infinity's client calls /rerank.
headers = {"Authorization": f"Bearer {key}"} if key != "none" else {}
result = rerank.sync(client=Client(base_url=url, headers=headers), body=RerankInput(query=query, documents=documents, return_documents=True))
print("infinity: " + ", ".join(f"{r.index} {r.document[:20]!r}" for r in result.results))
