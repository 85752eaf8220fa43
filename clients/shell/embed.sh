#!/bin/sh
# smls from the shell: curl piped to jq. Usage: clients/shell/embed.sh [URL]
set -eu
SMLS=${1:-${SMLS_URL:-http://127.0.0.1:8000}}
# With SMLS_API_KEY set, every call sends it (curl reads the header from stdin: not in `ps`).
curl() { if [ -n "${SMLS_API_KEY:-}" ]; then printf 'Authorization: Bearer %s\n' "$SMLS_API_KEY" | command curl -H @- "$@"; else command curl "$@"; fi; }

# A form field holding a Python-style list: one vector per text.
curl -sS --fail-with-body "$SMLS/embed" \
  --data-urlencode "message=['Hello world!', 'How are you today?']" |
  jq -c '{model, dimension, vectors: (.embeddings | length), first: (.embeddings[0][:3] | map(. * 1000 | round / 1000))}'

# A JSON body, with options: unit-length vectors cut to 64 dimensions.
curl -sS --fail-with-body "$SMLS/embed" -H 'Content-Type: application/json' \
  -d '{"message": ["Grüße aus Köln", "Hello world!"], "normalize": true, "dimensions": 64}' |
  jq -c '{dimension, normalized, lengths: [.embeddings[] | length]}'

# A stored document: the first three sentences with their page numbers.
curl -sS --fail-with-body "$SMLS/documents/demo" |
  jq -r '"\(.doc_id): \(.count) sentences", (.sentences[:3][] | "\(.index)\tpages \([.pages[].number] | join(","))\t\(.text[:60])")'

# Several models: the served ones, then the last embedding model listed, picked by name.
curl -sS --fail-with-body "$SMLS/models" | jq -r '"models: \([.models[] | "\(.name) (\(.kind))"] | join(", "))"'
MODEL=$(curl -sS --fail-with-body "$SMLS/models" | jq -r '[.models[] | select(.kind == "embedding")][-1].name')
curl -sS --fail-with-body "$SMLS/embed" --data-urlencode "message=Hello world!" --data-urlencode "model=$MODEL" |
  jq -c '{model, dimension}'

# Reranking: by default a cross-encoder if the server has one, else the default model's
# cosine; then the default embedding model by name (jq builds the JSON, quoting included).
DOCS='["Stock markets fell sharply.", "Cats sleep up to sixteen hours a day.", "Paris is the capital of France."]'
curl -sS --fail-with-body "$SMLS/rerank" -H 'Content-Type: application/json' \
  -d "{\"query\": \"How long do cats sleep?\", \"documents\": $DOCS, \"top_n\": 2}" |
  jq -c '{model, scorer, order: [.results[].index]}'
DEFAULT=$(curl -sS --fail-with-body "$SMLS/models" | jq -r .default)
jq -n --arg model "$DEFAULT" --argjson docs "$DOCS" '{query: "How long do cats sleep?", documents: $docs, model: $model}' |
  curl -sS --fail-with-body "$SMLS/rerank" -H 'Content-Type: application/json' -d @- |
  jq -c '{model, scorer, order: [.results[].index], best: (.results[0].relevance_score * 1000 | round / 1000)}'

# Counting tokens without running the model: the default model's ids for a text.
curl -sS --fail-with-body "$SMLS/tokenize" -H 'Content-Type: application/json' -d '{"text": "Hello world!", "return_tokens": false}' |
  jq -c '.texts[0] | {count, ids}'
