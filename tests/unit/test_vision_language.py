"""Captioning and VQA backends (BLIP, ViLT, GIT) through the loader production uses.

Each model is a tiny *random* checkpoint (hidden 32, one layer) written with ``save_pretrained``
together with the real bert-base-uncased WordPiece tokenizer from the packaged MiniLM, then loaded
from that directory by ``load_vision_language``. Random weights still decode real vocabulary
entries; outputs are compared with the in-memory model that was saved (the weights were loaded,
not re-initialised) and with single-image runs (batching changes nothing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.errors import InvalidInput
from models.registry import VisionLanguageModelSpec, load_vision_language
from models.vision_language import (
    BlipCaptioner,
    BlipQuestionAnswerer,
    GenerationSettings,
    GitCaptioner,
    ViltQuestionAnswerer,
    run_batch,
)
from tests import checkpoints
from tools.demo_data import source_photo

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "china", "flower", "camera", "horse")
QUESTIONS = (
    "what is this?",
    "what colour is the cup on the table?",
    "is it a cat?",
    "how many?",
    "where was this picture taken?",
    "is the flower red or white?",
    "who is holding the camera?",
    "what animal is it?",
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models spend their time in per-op thread handoffs: on a busy 2-core machine one thread
    runs them ~50x faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [source_photo(name) for name in PHOTOS]


@pytest.fixture(scope="module")
def vocab() -> set[str]:
    from models import packaged

    return set((packaged.minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines())


def _build(tmp_path_factory, name: str, task: str, engine: str, build) -> dict:
    path = tmp_path_factory.mktemp(name)
    saved = build(path)
    spec = VisionLanguageModelSpec(id=f"tiny-{name}", task=task, engine=engine, path=str(path), max_tokens=8)
    return {"path": str(path), "saved": saved, "spec": spec, "model": load_vision_language(spec)}


@pytest.fixture(scope="module")
def blip_caption(tmp_path_factory):
    return _build(
        tmp_path_factory,
        "blip-caption",
        "caption",
        "blip",
        lambda p: checkpoints.blip_checkpoint(p, "caption"),
    )


@pytest.fixture(scope="module")
def blip_vqa(tmp_path_factory):
    return _build(
        tmp_path_factory, "blip-vqa", "vqa", "blip", lambda p: checkpoints.blip_checkpoint(p, "vqa")
    )


@pytest.fixture(scope="module")
def vilt(tmp_path_factory):
    return _build(tmp_path_factory, "vilt", "vqa", "vilt", checkpoints.vilt_checkpoint)


@pytest.fixture(scope="module")
def git(tmp_path_factory):
    return _build(tmp_path_factory, "git", "caption", "git", checkpoints.git_checkpoint)


@pytest.fixture(params=["blip_caption", "git"])
def captioner(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(params=["blip_caption", "git", "blip_vqa"])
def generator(request):
    return request.getfixturevalue(request.param)


def _spy(monkeypatch, obj, name: str) -> list[dict]:
    """Record the keyword arguments of every call to ``obj.name`` (then call through)."""
    calls: list[dict] = []
    real = getattr(obj, name)

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, spy)
    return calls


def _generate_target(entry: dict):
    """The transformers call that does one batch's decoding for this backend."""
    model = entry["model"]
    return (
        (model.model.text_decoder, "generate")
        if isinstance(model, BlipQuestionAnswerer)
        else (model.model, "generate")
    )


def _texts(entry: dict, n: int, prompt: str | None = None) -> list[str | None]:
    return list(QUESTIONS[:n]) if entry["spec"].task == "vqa" else [prompt] * n


def _real_wordpieces(text: str, tokenizer, vocab: set[str]) -> bool:
    """Text made of the real vocabulary: it re-tokenises without [UNK] and holds whole English-looking
    vocabulary words (an ignored vocab file decodes to [UNK]s or nothing)."""
    pieces = tokenizer.tokenize(text)
    words = [w for w in text.split() if w.isascii() and w.isalpha() and len(w) >= 3 and w in vocab]
    return bool(pieces) and "[UNK]" not in pieces and all(p in vocab for p in pieces) and len(words) >= 1


# ------------------------------------------------------------------------------------- loading


def test_each_engine_loads_through_the_registry(blip_caption, blip_vqa, vilt, git):
    expected = {
        "blip_caption": (blip_caption, BlipCaptioner, 30_524),
        "blip_vqa": (blip_vqa, BlipQuestionAnswerer, 30_524),
        "vilt": (vilt, ViltQuestionAnswerer, 30_522),
        "git": (git, GitCaptioner, 30_522),
    }
    for entry, cls, vocab_size in expected.values():
        model = entry["model"]
        assert type(model) is cls
        assert (model.model_id, model.task, model.engine) == (
            entry["spec"].id,
            entry["spec"].task,
            entry["spec"].engine,
        )
        assert len(model.tokenizer) == vocab_size
        assert (
            model.tokenizer.convert_tokens_to_ids("cat") == 4937
        )  # bert-base-uncased's id, not a fresh vocab
        assert model.defaults == GenerationSettings(max_tokens=8, num_beams=1, top_k=5)
    assert blip_caption["model"].text_param == git["model"].text_param == "prompt"
    assert blip_vqa["model"].text_param == vilt["model"].text_param == "question"


def test_generators_match_the_saved_model(generator, photos):
    """Greedy ids from the loaded backend equal those of the in-memory model that was saved."""
    model, saved = generator["model"], generator["saved"]
    text = _texts(generator, 1)[0]
    item = model.preprocess(photos[0], text)
    out = run_batch(model, [(photos[0], text)], model.settings(max_tokens=6))[0]
    pixels = item.pixels[None]
    with torch.inference_mode():
        if isinstance(
            model, BlipQuestionAnswerer
        ):  # one unpadded question: transformers' own generate agrees
            ids = saved.generate(
                input_ids=torch.tensor([item.text_ids]), pixel_values=pixels, max_new_tokens=6
            )[0, 1:]
        elif isinstance(model, BlipCaptioner):
            ids = saved.generate(pixel_values=pixels, max_new_tokens=6)[0, 1:]
        else:
            ids = saved.generate(pixel_values=pixels, input_ids=torch.tensor([[101]]), max_new_tokens=6)[
                0, 1:
            ]
    assert out.text == model.tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert out.tokens == 6


def test_vilt_matches_the_saved_model(vilt, photos):
    model, saved = vilt["model"], vilt["saved"]
    enc = model.processor(images=photos[1], text=QUESTIONS[1], return_tensors="pt")
    with torch.inference_mode():
        probs = saved(**enc).logits.softmax(-1)[0]
    out = run_batch(model, [(photos[1], QUESTIONS[1])], model.settings(top_k=3))[0]
    best = probs.topk(3)
    assert [a.answer for a in out.answers] == [saved.config.id2label[i] for i in best.indices.tolist()]
    np.testing.assert_allclose([a.probability for a in out.answers], best.values.numpy(), atol=1e-5)


def test_spec_refuses_engines_that_cannot_do_the_task(blip_caption, vilt):
    with pytest.raises(ValueError, match="engine vilt does vqa, not caption"):
        VisionLanguageModelSpec(id="v", task="caption", engine="vilt", path="x")
    with pytest.raises(ValueError, match="engine git does caption, not vqa"):
        VisionLanguageModelSpec(id="g", task="vqa", engine="git", path="x")
    with pytest.raises(ValueError, match="num_beams must be 1"):
        VisionLanguageModelSpec(id="v", task="vqa", engine="vilt", path="x", num_beams=2)
    with pytest.raises(ValueError):
        VisionLanguageModelSpec(id="b", task="caption", engine="blip", path="x", max_tokens=0)
    # a ViLT directory named as a BLIP model fails at load time, naming the model
    spec = VisionLanguageModelSpec(id="wrong", task="caption", engine="blip", path=vilt["path"])
    with pytest.raises(ValueError, match="'wrong'.*'vilt' checkpoint"):
        load_vision_language(spec)


# ----------------------------------------------------------------------------------- generation


def test_random_weights_decode_real_wordpieces(generator, photos, vocab):
    model = generator["model"]
    outs = run_batch(model, list(zip(photos[:4], _texts(generator, 4))), model.settings(max_tokens=8))
    for out in outs:
        assert _real_wordpieces(out.text, model.tokenizer, vocab), out.text
        assert 1 <= out.tokens <= 8
    assert len({o.text for o in outs}) > 1  # the image (and question) matter


def test_max_tokens_is_honoured(generator, photos):
    model = generator["model"]
    items = list(zip(photos[:3], _texts(generator, 3)))
    short = run_batch(model, items, model.settings(max_tokens=3))
    long = run_batch(model, items, model.settings(max_tokens=12))
    assert all(o.tokens <= 3 for o in short) and all(o.tokens <= 12 for o in long)
    assert sum(o.tokens for o in long) > sum(o.tokens for o in short)
    assert all(len(model.tokenizer.tokenize(o.text)) >= o.tokens for o in short)


def test_num_beams_reaches_generate(generator, photos, monkeypatch):
    model = generator["model"]
    calls = _spy(monkeypatch, *_generate_target(generator))
    items = list(zip(photos[:2], _texts(generator, 2)))
    greedy = run_batch(model, items, model.settings(max_tokens=5))
    beams = run_batch(model, items, model.settings(max_tokens=5, num_beams=3))
    assert [(c["num_beams"], c["max_new_tokens"], c["do_sample"]) for c in calls] == [
        (1, 5, False),
        (3, 5, False),
    ]
    assert all(o.tokens <= 5 for o in beams) and len(beams) == len(greedy) == 2


def test_spec_defaults_apply_when_the_request_gives_none(blip_caption, photos, monkeypatch):
    model = load_vision_language(blip_caption["spec"].model_copy(update={"max_tokens": 4, "num_beams": 2}))
    calls = _spy(monkeypatch, model.model, "generate")
    run_batch(model, [(photos[0], None)], model.settings())
    assert (calls[0]["max_new_tokens"], calls[0]["num_beams"]) == (4, 2)


def test_conditional_caption_starts_with_the_prompt(captioner, photos):
    model = captioner["model"]
    prompt = "A photograph of"
    cond, uncond = run_batch(model, [(photos[0], prompt), (photos[0], None)], model.settings(max_tokens=5))
    assert cond.text.startswith(prompt)
    assert len(cond.text) > len(prompt) and cond.tokens == 5
    assert cond.prompt_tokens == len(model.tokenizer(prompt)["input_ids"]) and uncond.prompt_tokens == 0
    assert not uncond.text.lower().startswith("a photograph of")
    # the continuation is what the model generated after the prompt's tokens, not a fresh caption
    assert cond.text[len(prompt) :].strip() != uncond.text


def test_batch_of_8_runs_one_generate_call(generator, photos, monkeypatch):
    model = generator["model"]
    calls = _spy(monkeypatch, *_generate_target(generator))
    before = model.stats.calls
    texts = _texts(generator, 8, prompt="a picture of")
    settings = model.settings(max_tokens=6)
    batched = run_batch(model, list(zip(photos, texts)), settings)
    assert len(calls) == 1 and model.stats.calls == before + 1 and model.stats.largest >= 8
    # each item gets its own result: the same as running it alone (for VQA, the other questions'
    # padding must not change an answer)
    alone = [run_batch(model, [(p, t)], settings)[0] for p, t in zip(photos, texts)]
    assert batched == alone


def test_captions_group_by_prompt_length(captioner, photos, monkeypatch):
    model = captioner["model"]
    calls = _spy(monkeypatch, model.model, "generate")
    texts = [None, "a photo of", None, "a photo of", "two", None]
    settings = model.settings(max_tokens=4)
    batched = run_batch(model, list(zip(photos, texts)), settings)
    assert len(calls) == 3  # no prompt, 'a photo of', 'two': one call per prompt length
    assert batched == [run_batch(model, [(p, t)], settings)[0] for p, t in zip(photos, texts)]


# ------------------------------------------------------------------------------------------ ViLT


def test_vilt_returns_k_answers_with_probabilities(vilt, photos):
    model = vilt["model"]
    labels = set(vilt["saved"].config.id2label.values())
    outs = run_batch(model, list(zip(photos[:4], QUESTIONS[:4])), model.settings(top_k=4))
    for out in outs:
        probs = [a.probability for a in out.answers]
        assert len(out.answers) == 4 and {a.answer for a in out.answers} <= labels
        assert all(0 < p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
        assert probs == sorted(probs, reverse=True)
        assert out.text == out.answers[0].answer and out.tokens == len(model.tokenizer.tokenize(out.text))
    assert len({o.answers for o in outs}) > 1
    assert len(run_batch(model, [(photos[0], "what?")], model.settings())[0].answers) == 5  # the spec's top_k


def test_vilt_max_tokens_keeps_answers_that_fit(vilt, photos):
    model = vilt["model"]
    out = run_batch(model, [(photos[1], QUESTIONS[1])], model.settings(max_tokens=1, top_k=20))[0]
    single = [a for a in checkpoints.VQA_ANSWERS if len(model.tokenizer.tokenize(a)) == 1]
    assert sorted(a.answer for a in out.answers) == sorted(single)  # every 1-token answer, no longer one
    assert "a cup of coffee" in [
        a.answer
        for a in run_batch(model, [(photos[1], QUESTIONS[1])], model.settings(max_tokens=4, top_k=20))[
            0
        ].answers
    ]


def test_vilt_refuses_beams(vilt):
    with pytest.raises(InvalidInput) as err:
        vilt["model"].settings(num_beams=2)
    assert err.value.param == "num_beams"
    assert vilt["model"].settings(num_beams=1).num_beams == 1


def test_vilt_pads_images_of_different_shapes(vilt, photos):
    model = vilt["model"]
    tall, wide = photos[0][:, :200], photos[2][:100]
    items = [(tall, "what is this?"), (wide, "what is this?")]
    settings = model.settings(top_k=3)
    assert model.preprocess(tall, "x").pixels.shape != model.preprocess(wide, "x").pixels.shape
    assert run_batch(model, items, settings) == [run_batch(model, [i], settings)[0] for i in items]


# ----------------------------------------------------------------------------------- bad input


def test_question_over_the_length_limit(blip_vqa, vilt, photos):
    for entry in (blip_vqa, vilt):
        model = entry["model"]
        limit = model.max_text_tokens
        assert limit == 64  # the tiny checkpoints' text positions
        ok = " ".join(["cat"] * (limit - 2))  # + [CLS] and [SEP]
        assert model.check_text(ok) == limit
        with pytest.raises(InvalidInput) as err:
            model.check_text(ok + " cat")
        assert err.value.param == "question" and f"at most {limit}" in err.value.message
        with pytest.raises(InvalidInput) as err:
            run_batch(model, [(photos[0], ok + " cat")], model.settings())
        assert err.value.param == "question"
        with pytest.raises(InvalidInput) as err:  # a huge text is refused by its length alone
            model.check_text("cat " * 100_000)
        assert err.value.param == "question" and "399999 characters; the limit is 4096" in err.value.message


def test_prompt_over_the_length_limit(captioner):
    model = captioner["model"]
    assert model.max_text_tokens == 32 and model.max_new_tokens == 32  # 64 decoder positions, half each
    with pytest.raises(InvalidInput) as err:
        model.check_text("a " * 40)
    assert err.value.param == "prompt"
    assert model.check_text(None) == 0 and model.check_text("   ") == 0


def test_vqa_needs_a_question(blip_vqa, vilt, photos):
    for entry in (blip_vqa, vilt):
        for missing in (None, "", "  "):
            with pytest.raises(InvalidInput) as err:
                entry["model"].preprocess(photos[0], missing)
            assert err.value.param == "question"


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 33}, "max_tokens"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"num_beams": 0}, "num_beams"),
        ({"num_beams": 9}, "num_beams"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 21}, "top_k"),
        ({"max_tokens": True}, "max_tokens"),
    ],
)
def test_generation_settings_out_of_range(blip_caption, kwargs, param):
    with pytest.raises(InvalidInput) as err:
        blip_caption["model"].settings(**kwargs)
    assert err.value.param == param


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((32, 32), dtype=np.uint8),
        np.zeros((32, 32, 3), dtype=np.float32),
        np.zeros((0, 32, 3), np.uint8),
        np.zeros((32, 32, 4), dtype=np.uint8),
    ],
)
def test_images_must_be_rgb_uint8(blip_caption, image):
    with pytest.raises(InvalidInput) as err:
        blip_caption["model"].preprocess(image, None)
    assert err.value.param == "image"


# ------------------------------------------------------------------------------ runtime options


def test_bf16_and_warmup(blip_caption, photos, vocab):
    model = load_vision_language(blip_caption["spec"].model_copy(update={"precision": "bf16"}))
    assert model.precision == "bf16"
    model.warmup()
    out = run_batch(model, [(photos[0], None)], model.settings(max_tokens=4))[0]
    assert out.tokens == 4 and _real_wordpieces(out.text, model.tokenizer, vocab)


def test_empty_batch(blip_caption):
    assert blip_caption["model"].generate([], blip_caption["model"].defaults) == []


def test_checkpoints_save_a_loadable_processor(blip_caption):
    from transformers import AutoProcessor

    assert Path(blip_caption["path"], "tokenizer.json").is_file()
    assert len(AutoProcessor.from_pretrained(blip_caption["path"]).tokenizer) == 30_524
