"""Clients that embed through Sentence-Transformers: LangChain's HuggingFaceEmbeddings, LlamaIndex's
HuggingFaceEmbedding and Chroma's SentenceTransformerEmbeddingFunction, driven against the tiny checkpoint.

Each client must give exactly ``model.encode``'s vectors, on the inputs RAG pipelines produce: empty and
whitespace-only chunks, special tokens typed in text, free-form query instructions, images. A client that is
not installed is skipped with the reason (``pip install -e ".[clients]"``, which ``make install`` does).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_image

INSTALL = "install the clients extra: pip install -e '.[clients]'"
# Chunks as RAG splitters produce them (LangChain replaces newlines by spaces, so none here).
CHUNKS = ["Hà Nội là thủ đô của Việt Nam.", "", "   ", "xin <ocr> chào", "<|im_start|>user", "Phở bò Nam Định."]
ATOL = 1e-5


def client(module: str):
    return pytest.importorskip(module, reason=f"{module} is not installed ({INSTALL})")


def same(got, expected) -> bool:
    got, expected = np.asarray(got, dtype=np.float32), np.asarray(torch.as_tensor(expected).cpu(), dtype=np.float32)
    return got.shape == expected.shape and np.allclose(got, expected, atol=ATOL)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("client_images") / "page.png"
    make_image(96, 64, seed=8).save(path)
    return path


@pytest.mark.slow
def test_langchain_huggingface_embeddings(tiny_checkpoint, st_model, auto_model):
    langchain_huggingface = client("langchain_huggingface")
    embeddings = langchain_huggingface.HuggingFaceEmbeddings(
        model_name=str(tiny_checkpoint),
        model_kwargs={"trust_remote_code": True, "device": "cpu"},
        encode_kwargs={"batch_size": 4},
        query_encode_kwargs={"prompt": "query: "},  # a free-form instruction: text before the query
    )
    assert same(embeddings.embed_documents(CHUNKS), st_model.encode(CHUNKS))
    assert same(embeddings.embed_documents(CHUNKS), auto_model.encode(text=CHUNKS))
    query = embeddings.embed_query("thủ đô Việt Nam")
    assert same([query], auto_model.encode(text=["query: thủ đô Việt Nam"]))
    by_task = langchain_huggingface.HuggingFaceEmbeddings(
        model_name=str(tiny_checkpoint),
        model_kwargs={"trust_remote_code": True, "device": "cpu"},
        encode_kwargs={"prompt_name": "text_pair"},
    )
    assert same(by_task.embed_documents(CHUNKS[:2]), auto_model.encode(text=CHUNKS[:2], task="text_pair"))


@pytest.mark.slow
def test_llama_index_huggingface_embedding(tiny_checkpoint, auto_model, image_file):
    huggingface = client("llama_index.embeddings.huggingface")
    embedding = huggingface.HuggingFaceEmbedding(
        model_name=str(tiny_checkpoint),
        trust_remote_code=True,
        device="cpu",
        query_instruction="query: ",
        embed_batch_size=4,
    )
    assert same(embedding.get_text_embedding_batch(CHUNKS), auto_model.encode(text=CHUNKS))
    assert same([embedding.get_query_embedding("thủ đô")], auto_model.encode(text=["thủ đô"], prompt="query: "))
    assert same([embedding.get_image_embedding(str(image_file))], auto_model.encode(images=[image_file]))


def test_chroma_sentence_transformer_embedding_function(tiny_checkpoint, auto_model, tmp_path):
    client("chromadb")
    from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction

    function = SentenceTransformerEmbeddingFunction(
        model_name=str(tiny_checkpoint), device="cpu", normalize_embeddings=True, trust_remote_code=True
    )
    assert same(function(CHUNKS), auto_model.encode(text=CHUNKS))
    image = make_image(80, 60, seed=9)
    array = np.asarray(image)  # Chroma's image convention: HxWxC uint8 arrays
    assert same(function([array]), auto_model.encode(images=[image]))

    import chromadb
    from chromadb.config import Settings

    store = chromadb.PersistentClient(path=str(tmp_path / "chroma"), settings=Settings(anonymized_telemetry=False))
    collection = store.create_collection("docs", embedding_function=function, metadata={"hnsw:space": "cosine"})
    collection.add(ids=[f"d{i}" for i in range(len(CHUNKS))], documents=CHUNKS)
    stored = collection.get(ids=["d0", "d1"], include=["embeddings"])["embeddings"]
    assert same(stored, auto_model.encode(text=CHUNKS[:2]))
    hits = collection.query(query_texts=["Phở bò Nam Định."], n_results=1)
    assert hits["ids"] == [["d5"]]
