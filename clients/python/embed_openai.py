"""smls through the official openai package (its /v1/embeddings API). Usage: python clients/python/embed_openai.py [URL]"""

import os
import sys

from openai import OpenAI

url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SMLS_URL", "http://127.0.0.1:8000")
# smls needs no key unless SMLS_API_KEY is set; the package insists on one.
client = OpenAI(base_url=f"{url}/v1", api_key=os.environ.get("SMLS_API_KEY", "none"))

models = client.models.list().data
print("models: " + ", ".join(m.id for m in models))
model = models[0].id  # the first listed; smls adds each model's kind and dimension to the list
result = client.embeddings.create(model=model, input=["Hello world!", "How are you today?"])
print(f"model: {result.model}, vectors: {len(result.data)}, dimension: {len(result.data[0].embedding)}, tokens: {result.usage.total_tokens}")

short = client.embeddings.create(model=model, input="Hello world!", dimensions=128)
norm = sum(x * x for x in short.data[0].embedding) ** 0.5
print(f"dimensions=128: {len(short.data[0].embedding)} values, norm {norm:.3f}")

# Another model by name: the last embedding model listed.
other = [m.id for m in models if getattr(m, "kind", "embedding") == "embedding"][-1]
print(f"model {other}: dimension {len(client.embeddings.create(model=other, input='Hello world!').data[0].embedding)}")
