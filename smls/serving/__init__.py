"""The serving layer: the models smls serves, each with what serving it takes, built once below HTTP.

  loading.py  which backend loads a model folder: the registry's builders, load_model (light: `import smls` runs it)
  models.py   EmbeddingModel (encoder, batch queue, document vectors, search, int8 ranges), ScoringModel
  engine.py   Engine: every served model by name and the documents, built from the catalog by `build`

The web app (smls.web), the command line (python -m smls) and in-process users take their
models from here, so a batch queue, a document embedder and a search are built one way.
Nothing here knows of HTTP: errors are smls.errors' domain errors, which the web maps.
This package's own module imports nothing, so that `import smls` stays light (and
gunicorn.conf.py can set up the metrics before prometheus_client is first imported).
"""
