"""Prefetching: in order, errors re-raised as without workers, encode bit-identical for every worker setting."""

from __future__ import annotations

import pytest
import torch
from conftest import make_image

from prefetch_vipyloqwen import prefetch, resolve_num_workers, resolve_worker_type


def _square(n: int) -> int:
    if n == 3:
        raise ValueError("item 3: bad")
    return n * n


@pytest.mark.parametrize("worker_type", ["process", "thread"])
def test_results_in_job_order_and_errors_at_their_job(worker_type):
    assert list(prefetch(_square, [5, 1, 2, 0, 4], num_workers=2, worker_type=worker_type)) == [25, 1, 4, 0, 16]
    results = prefetch(_square, [1, 2, 3, 4], num_workers=2, worker_type=worker_type)
    assert next(results) == 1 and next(results) == 4
    with pytest.raises(ValueError, match=r"^item 3: bad$"):  # the original exception, not a worker wrapper
        next(results)


def test_num_workers_validation_and_default():
    assert resolve_num_workers(None, 1) == 0
    assert resolve_num_workers(None, 5) >= 1
    assert resolve_num_workers(None, 5, has_images=False) == 0
    assert resolve_num_workers(3, 1) == 3
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="num_workers"):
            resolve_num_workers(bad, 4)
    with pytest.raises(ValueError, match="worker_type must be one of .*'auto', 'process', 'thread'"):
        prefetch(_square, [1], num_workers=1, worker_type="gpu")


def test_auto_worker_type_is_threads_on_cpu_and_processes_on_gpu():
    assert resolve_worker_type("auto", torch.device("cpu")) == "thread"
    assert resolve_worker_type("auto", None) == "thread"
    assert resolve_worker_type("auto", "cuda:1") == "process"
    assert resolve_worker_type("process", "cpu") == "process"
    assert list(prefetch(_square, [2, 4], num_workers=2, worker_type="auto", device="cpu")) == [4, 16]


def _mixed_items(tmp_path):
    paths = []
    for seed in range(3):
        path = tmp_path / f"page{seed}.png"
        make_image(300 + 40 * seed, 420, seed=seed).save(path)
        paths.append(str(path))
    texts = ["Hà Nội là thủ đô.", None, "Biển số xe này là gì?", "Một đoạn văn dài hơn " * 8, None, "Hai ảnh"]
    images = [None, paths[0], make_image(100, 60, seed=7), None, [paths[1]], [paths[2], make_image(64, 64, seed=9)]]
    return texts, images


@pytest.mark.parametrize(
    ("num_workers", "worker_type"), [(2, "process"), (2, "thread"), (None, "process"), (None, "auto")]
)
def test_encode_with_workers_is_bit_identical(auto_model, tmp_path, num_workers, worker_type):
    texts, images = _mixed_items(tmp_path)
    reference = auto_model.encode(text=texts, images=images, batch_size=2, num_workers=0)
    got = auto_model.encode(text=texts, images=images, batch_size=2, num_workers=num_workers, worker_type=worker_type)
    assert torch.equal(got, reference)


def test_encode_error_with_workers_names_the_item(auto_model, tmp_path):
    texts, images = _mixed_items(tmp_path)
    images[4] = [str(tmp_path / "missing.png")]
    for workers in (0, 2):
        with pytest.raises(ValueError, match=r"item 5 \(.*missing.png.\), image 1: image file not found"):
            auto_model.encode(text=texts, images=images, batch_size=2, num_workers=workers)


def test_saved_checkpoint_ships_the_prefetch_module_and_encodes_with_workers(tiny_parts, tmp_path):
    """save_pretrained alone (what register_for_auto_class copies) must carry the module encode imports."""
    from transformers import AutoModel

    model, processor = tiny_parts
    type(model.config).register_for_auto_class()
    type(model).register_for_auto_class("AutoModel")
    type(processor).register_for_auto_class("AutoProcessor")
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "prefetch_vipyloqwen.py").is_file()
    loaded = AutoModel.from_pretrained(tmp_path / "ckpt", trust_remote_code=True).eval()
    assert type(loaded).__module__.startswith("transformers_modules")  # the checkpoint's own code
    texts, images = _mixed_items(tmp_path)
    reference = loaded.encode(text=texts, images=images, batch_size=2, num_workers=0)
    assert torch.equal(loaded.encode(text=texts, images=images, batch_size=2, num_workers=2), reference)
