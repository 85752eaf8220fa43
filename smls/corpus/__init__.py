"""`python -m smls embed`: a corpus (JSONL, Parquet, documents) into Parquet files of vectors, on this machine or a Ray cluster.

sources (what is read, cut into blocks) -> job (a block embedded as the server embeds it,
and the local run) or on_ray (the same blocks on an actor pool) -> output (each block's
file, whole or not at all). command wires the command line to them.
"""
