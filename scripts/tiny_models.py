"""Build tiny random-weight models for tests and benchmarks: a sentence embedding model and a cross-encoder.

No hub, no download: the architecture is a small BERT made here, the vocabulary is the
embedded all-MiniLM-L6-v2's tokenizer, the weights are random (seeded, so two builds
agree). Scores from them mean nothing; they exercise every code path a real model does.

    python -m scripts.tiny_models embedding data/models/tiny
    python -m scripts.tiny_models cross-encoder data/models/judge
    python -m scripts.tiny_models minilm-shaped data/models/random-minilm   (MiniLM's size, for speed tests)
    python -m scripts.tiny_models embedding /tmp/e5ish --prompts "query:query: |passage:passage: " --default-prompt query
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path


def _bert_config(size: str) -> object:
    from transformers import BertConfig

    from smls.config import embedded_model_path

    if size == "minilm":  # the embedded model's own shape: the same cost per sentence
        return BertConfig.from_pretrained(str(embedded_model_path()))
    return BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=512
    )


def build_embedding(
    folder: Path, *, seed: int = 0, size: str = "tiny", max_seq_length: int = 128, prompts: dict[str, str] | None = None, default_prompt_name: str | None = None
) -> Path:
    """A sentence-transformers embedding model (BERT, mean pooling) with random weights, saved in `folder` (with `prompts` in its config, if given)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertModel

    from smls.config import embedded_model_path

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        BertModel(_bert_config(size)).save_pretrained(tmp)  # type: ignore[arg-type]
        AutoTokenizer.from_pretrained(str(embedded_model_path())).save_pretrained(tmp)
        transformer = Transformer(tmp, max_seq_length=max_seq_length)
        pooling = Pooling(transformer.get_embedding_dimension(), "mean")
        model = SentenceTransformer(modules=[transformer, pooling], device="cpu", prompts=prompts, default_prompt_name=default_prompt_name)
        _fresh(folder)
        model.save(str(folder))
    return folder


def build_cross_encoder(folder: Path, *, seed: int = 0, max_seq_length: int = 128) -> Path:
    """A sentence-transformers CrossEncoder (BERT with one output) with random weights, saved in `folder`."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertForSequenceClassification

    from smls.config import embedded_model_path

    torch.manual_seed(seed)
    config = _bert_config("tiny")
    config.num_labels = 1  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as tmp:
        BertForSequenceClassification(config).save_pretrained(tmp)  # type: ignore[arg-type]
        AutoTokenizer.from_pretrained(str(embedded_model_path())).save_pretrained(tmp)
        model = CrossEncoder(tmp, num_labels=1, max_length=max_seq_length, device="cpu")
        _fresh(folder)
        model.save(str(folder))
    return folder


def _fresh(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)


def main(argv: list[str] | None = None) -> None:
    """Command line: build one model into a folder."""
    parser = argparse.ArgumentParser(prog="python -m scripts.tiny_models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["embedding", "cross-encoder", "minilm-shaped"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", help="an embedding model's prompts, as SMLS_MODELS writes them: name:prefix pairs separated by '|'")
    parser.add_argument("--default-prompt", help="the name of the prompt every text gets unless told otherwise")
    args = parser.parse_args(argv)
    import smls  # noqa: F401  (offline settings for the libraries)
    from smls.prompts import parse_setting

    if args.kind == "cross-encoder":
        build_cross_encoder(args.folder, seed=args.seed)
    else:
        prompts = parse_setting(args.prompts, "--prompts") if args.prompts else None
        size = "minilm" if args.kind == "minilm-shaped" else "tiny"
        build_embedding(args.folder, seed=args.seed, size=size, prompts=prompts, default_prompt_name=args.default_prompt)
    print(args.folder)


if __name__ == "__main__":
    main()
