"""Query-side ConSE and prompt ensembles, on a deterministic toy text encoder (no weights, no Ray)."""

import numpy as np
import pytest

from models.fusion_features import image_version, text_version
from models.registry import QueryConSESpec, TextModelSpec, VisionModelSpec
from models.text import ConSEQueryEncoder, prompt_embeddings


class ToyText:
    """Each distinct text gets a fixed random unit vector; records what it was asked to embed."""

    model_id, space, dim, token_dim = "toy", "text:toy", 16, 16

    def __init__(self):
        self.seen: list[str] = []

    def embed(self, texts):
        self.seen += list(texts)
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) for t in texts]
        return np.stack([r / np.linalg.norm(r) for r in rows]).astype(np.float32)

    def tokens(self, texts):
        return [np.zeros((2, self.token_dim), np.float32) for _ in texts]

    def warmup(self):
        pass


def _classes(n=8, dim=16, seed=0):
    c = np.random.default_rng(seed).normal(size=(n, dim))
    return (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)


def test_projection_only_lies_in_the_span_of_the_top_t_class_prompts():
    classes = _classes()
    enc = ConSEQueryEncoder(base=ToyText(), class_embeddings=classes, top_t=2, temperature=0.05, mix=0.0)
    raw = ToyText().embed(["a temple on a hill"])
    out = enc.project(raw)[0]
    top2 = np.argsort(-(classes @ raw[0]))[:2]
    coef, residual, *_ = np.linalg.lstsq(classes[top2].T, out, rcond=None)
    assert np.allclose(classes[top2].T @ coef, out, atol=1e-5) and (coef > 0).all()
    assert np.isclose(np.linalg.norm(out), 1.0, atol=1e-5)


def test_mix_one_is_the_raw_vector_and_mix_moves_towards_it():
    classes, base = _classes(), ToyText()
    raw = base.embed(["galaxies in deep space"])
    full = ConSEQueryEncoder(base=base, class_embeddings=classes, mix=1.0).project(raw)
    assert np.allclose(full, raw, atol=1e-6)
    half = ConSEQueryEncoder(base=base, class_embeddings=classes, mix=0.5).project(raw)
    none = ConSEQueryEncoder(base=base, class_embeddings=classes, mix=0.0).project(raw)
    assert (half @ raw.T)[0, 0] > (none @ raw.T)[0, 0]


def test_query_encoder_keeps_the_base_space_and_tokens():
    base = ToyText()
    enc = ConSEQueryEncoder(base=base, class_embeddings=_classes(), top_t=100)
    assert (enc.space, enc.dim, enc.model_id, enc.token_dim, enc.top_t) == ("text:toy", 16, "toy", 16, 8)
    assert enc.embed(["a", "b"]).shape == (2, 16)


@pytest.mark.parametrize("kwargs", [{"mix": 1.5}, {"temperature": 0.0}, {"top_t": 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ConSEQueryEncoder(base=ToyText(), class_embeddings=_classes(), **kwargs)


def test_prompt_ensemble_is_the_normalised_mean_of_its_templates():
    base = ToyText()
    out = prompt_embeddings(base, ["cat", "dog"], ["a photo of a {}", "a picture of a {}"])
    assert base.seen == ["a photo of a cat", "a picture of a cat", "a photo of a dog", "a picture of a dog"]
    cat = base.embed(["a photo of a cat", "a picture of a cat"]).mean(0)
    assert np.allclose(out[0], cat / np.linalg.norm(cat), atol=1e-6)
    single = prompt_embeddings(base, ["cat"], ["a photo of a {}"])
    assert np.allclose(single[0], base.embed(["a photo of a cat"])[0], atol=1e-6)
    with pytest.raises(ValueError):
        prompt_embeddings(base, ["cat"], ["no placeholder"])


def test_feature_versions_change_with_the_conse_options():
    plain, query = TextModelSpec(), TextModelSpec(query_conse=QueryConSESpec())
    assert text_version(plain) != text_version(query)
    assert image_version(VisionModelSpec(), plain) == image_version(VisionModelSpec(), query)
    assert image_version(VisionModelSpec(), plain) != image_version(
        VisionModelSpec(conse_prompts="ensemble"), plain
    )
