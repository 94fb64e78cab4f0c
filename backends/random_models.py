"""The ``random:`` model source: diffusers pipelines with random weights, built from configs.

A config folder ``backends/random_configs/NAME/`` holds small text files only:

- ``pipeline.json``: the pipeline class, the seed, and one entry per component
  (``{"library": "diffusers", "class": "UNet2DConditionModel", "config": "unet.json"}``; a
  tokenizer entry names a folder instead of a file; ``null`` leaves a component out);
- one JSON config per model component, in the format its class's ``from_config`` reads;
- tokenizer files (``vocab.json`` + ``merges.txt`` + ``tokenizer_config.json``), written by
  :func:`write_clip_tokenizer` and committed, so nothing is fetched from the hub.
- ``"extras"`` in ``pipeline.json``: files written beside the saved pipeline, such as a
  random IP-Adapter (``"ip_adapter"``, see :func:`_write_ip_adapter`);
- image processor files (``"kind": "processor"``, a folder holding ``preprocessor_config.json``),
  loaded with ``from_pretrained`` like a tokenizer.

:func:`build_random_model` builds every component from a fixed seed, saves the pipeline with
``save_pretrained`` under ``cache_dir/random/NAME-DIGEST`` and returns that directory, which then
loads through the same ``from_pretrained`` code path as real weights. The digest covers the config
folder's contents, so editing a config builds a new directory instead of reusing a stale one.

torch, diffusers and transformers are imported only when a model is actually built.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from backends.base import ModelUnavailable
from backends.runtime.hub import quiet_progress
from backends.runtime.imports import missing

CONFIG_ROOT = Path(__file__).with_name("random_configs")
PREFIX = "random:"
# Bump when the way a config becomes weights changes, so every cached build is redone.
BUILD_VERSION = "1"
_BUILD_LOCK = threading.Lock()


def known_names(config_root: Path | None = None) -> list[str]:
    """The names ``random:NAME`` accepts: the config folders that hold a ``pipeline.json``."""
    root = config_root or CONFIG_ROOT
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "pipeline.json").is_file())


def config_dir(name: str, config_root: Path | None = None) -> Path:
    """The config folder for ``name``; an unknown name raises ModelUnavailable naming the known."""
    root = config_root or CONFIG_ROOT
    folder = root / name
    unsafe = "/" in name or "\\" in name or name.startswith(".")
    if unsafe or not (folder / "pipeline.json").is_file():
        known = ", ".join(f"{PREFIX}{n}" for n in known_names(root)) or "(none)"
        raise ModelUnavailable(
            f"unknown random model {PREFIX}{name}: no config folder {folder}; known: {known}"
        )
    return folder


def config_digest(name: str, config_root: Path | None = None) -> str:
    """A short sha256 of every file in the config folder (paths and bytes) and BUILD_VERSION."""
    folder = config_dir(name, config_root)
    h = hashlib.sha256(f"darkroom-random-model:{BUILD_VERSION}\0".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def build_random_model(name: str, cache_dir: Path, config_root: Path | None = None) -> Path:
    """Build ``random:NAME`` once into ``cache_dir/random/NAME-DIGEST`` and return that directory.

    An existing directory is returned as is. Concurrent builders (threads or processes) each
    build into their own temporary directory beside the target and rename it into place; the
    first rename wins and the others discard their copy, so readers never see a partial model.
    """
    folder = config_dir(name, config_root)
    target = Path(cache_dir) / "random" / f"{name}-{config_digest(name, config_root)}"
    if target.is_dir():
        return target
    # One build at a time per process: torch's seed is global, so two threads building at
    # once would interleave their random streams. Other processes race through the rename.
    with _BUILD_LOCK:
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            _build_into(folder, tmp)
            return publish(tmp, target)
        except ImportError as exc:
            raise missing(exc, f"random:{name}") from exc
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ModelUnavailable(
                f"could not build random:{name} from {folder} into {target.parent}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def publish(built: Path, target: Path) -> Path:
    """Rename ``built`` to ``target`` atomically; if another builder got there first, keep theirs.

    Returns ``target``; ``built`` is gone or left for the caller to delete.
    """
    try:
        os.rename(built, target)
    except OSError:
        if not target.is_dir():  # not a lost race: a real failure (disk, permissions)
            raise
        shutil.rmtree(built, ignore_errors=True)
    return target


def resolve_model_dir(model: str, cache_dir: Path) -> str:
    """What to pass to ``from_pretrained``: a built ``random:`` dir, a local dir, or the repo id."""
    if model.startswith(PREFIX):
        return str(build_random_model(model[len(PREFIX) :], cache_dir))
    local = Path(model).expanduser()
    if local.is_dir():
        return str(local)
    return model


def _build_into(folder: Path, out: Path) -> None:
    import torch

    spec = json.loads((folder / "pipeline.json").read_text())
    seed = int(spec.get("seed", 0))
    components: dict[str, Any] = {}
    # Components are built on the CPU from the CPU generator; fork_rng puts its state back,
    # so building never moves the RNG of the process that asked for it.
    with torch.random.fork_rng(devices=[]):
        for key, entry in spec["components"].items():
            torch.default_generator.manual_seed(seed)  # each component from the same seed
            components[key] = None if entry is None else _build_component(folder, entry)
    pipeline_class = getattr(_import("diffusers"), spec["pipeline"])
    pipe = pipeline_class(**components, **spec.get("arguments", {}))
    with quiet_progress():
        pipe.save_pretrained(out)
    # Files beside the pipeline, loaded by the pipeline's own loaders (e.g. load_ip_adapter).
    for kind, entry in spec.get("extras", {}).items():
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            _EXTRAS[kind](folder, entry, pipe, out)


def _build_component(folder: Path, entry: dict[str, Any]) -> Any:
    library = _import(entry["library"])
    cls = getattr(library, entry["class"])
    path = folder / entry["config"]
    if entry.get("kind") in ("tokenizer", "processor"):  # files in a folder, loaded as saved
        return cls.from_pretrained(str(path), local_files_only=True)
    config = json.loads(path.read_text())
    if entry["library"] == "transformers":
        config_cls = getattr(library, entry["config_class"])
        model = cls(config_cls(**config))
    elif entry.get("kind") == "scheduler":
        return cls.from_config(config)
    else:
        model = cls.from_config(config)
    return model.eval()


def _import(library: str) -> Any:
    if library not in ("diffusers", "transformers"):
        raise ModelUnavailable(
            f"random model configs may use diffusers or transformers, not {library!r}"
        )
    return importlib.import_module(library)


# --- CLIP tokenizer files -------------------------------------------------------------------

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


# The text the committed tokenizers' merges were learnt from: prompt-like English.
CORPUS = """
a photo of the product on a sunlit marble kitchen counter editorial lighting
an image of a person standing in the street at night with neon lights and rain
portrait of a woman with red hair in a studio soft light high detail sharp focus
landscape with mountains and a lake at sunset golden hour cinematic wide shot
still life of fruit on a wooden table painting in the style of an old master
close up of a watch on a white background clean minimal commercial photography
cat dog bird flower tree house car city forest beach ocean sky cloud snow water
blue green yellow orange purple black white pink brown gray colorful bright dark
beautiful realistic detailed professional studio natural warm cold vintage modern
"""


def write_clip_tokenizer(
    directory: Path, corpus: str = CORPUS, *, num_merges: int = 200, model_max_length: int = 77
) -> None:
    """Write a small CLIP BPE tokenizer (vocab.json, merges.txt, tokenizer_config.json).

    The vocabulary holds the whole byte alphabet, alone and as a word end, so any prompt
    tokenizes; merges are learnt from ``corpus`` (deterministically). merges.txt has a version
    header and no blank lines; ``model_max_length`` must be set or transformers overflows.
    This is how the tokenizer files in ``random_configs`` were made.
    """
    alphabet = list(_bytes_to_unicode().values())
    byte_of = _bytes_to_unicode()
    words = Counter(
        tuple(byte_of[b] for b in w.encode()) for w in corpus.lower().split() if w.isalpha()
    )
    corpus_words = {w[:-1] + (w[-1] + "</w>",): c for w, c in words.items()}
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in corpus_words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        corpus_words = {_merge(w, best): c for w, c in corpus_words.items()}
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


# --- T5 tokenizer file ----------------------------------------------------------------------


def write_t5_tokenizer(
    directory: Path, corpus: str = CORPUS, *, model_max_length: int = 512
) -> None:
    """Write a small T5 tokenizer: a Unigram ``tokenizer.json`` + ``tokenizer_config.json``.

    Pieces: ``<pad>`` ``</s>`` ``<unk>`` (ids 0-2, as in T5), the printable ASCII characters
    alone and after the word-start mark, and every word of ``corpus`` as one piece. Other
    characters become ``<unk>``, as with the real T5 vocabulary. No ``extra_ids``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    words = sorted({w for w in corpus.lower().split() if w.isalpha()})
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    pieces += [(c, -6.0) for c in chars] + [("\u2581" + c, -5.0) for c in chars]
    pieces += [("\u2581" + w, -1.0) for w in words]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="always"
    )
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "T5Tokenizer",
        "model_max_length": model_max_length,
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "extra_ids": 0,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


# --- extras: files beside the pipeline ------------------------------------------------------


def _write_ip_adapter(folder: Path, entry: dict[str, Any], pipe: Any, out: Path) -> None:
    """A random IP-Adapter laid out like ``h94/IP-Adapter``'s model folders.

    ``out/FOLDER/WEIGHT_NAME`` holds ``image_proj.*`` (a plain IP-Adapter ImageProjection:
    4 tokens) and ``ip_adapter.N.to_k_ip/to_v_ip`` for every cross-attention layer of the
    UNet, numbered as diffusers reads them; ``out/FOLDER/image_encoder`` holds the image
    encoder. ``pipe.load_ip_adapter(out, subfolder=FOLDER, weight_name=WEIGHT_NAME)`` loads it.
    """
    import torch
    from safetensors.torch import save_file

    target = out / entry["folder"]
    encoder = _build_component(folder, entry["image_encoder"])
    with quiet_progress():
        encoder.save_pretrained(target / "image_encoder")
    unet = pipe.unet
    cross = int(unet.config.cross_attention_dim)
    embed = int(encoder.config.projection_dim)
    tokens = 4  # diffusers reads a plain IP-Adapter's image projection as 4 tokens

    std = float(entry.get("weight_std", 1.0))  # large enough that the references show

    def weight(rows: int, cols: int) -> Any:
        return (torch.randn(rows, cols) * std).contiguous()

    tensors: dict[str, Any] = {
        "image_proj.proj.weight": weight(tokens * cross, embed),
        "image_proj.proj.bias": torch.zeros(tokens * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key_id = 1
    modules = dict(unet.named_modules())
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = modules[name.removesuffix(".processor")].to_k.weight.shape[0]
        tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = weight(hidden, cross)
        tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = weight(hidden, cross)
        key_id += 2
    target.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target / entry["weight_name"]))


_EXTRAS = {"ip_adapter": _write_ip_adapter}
