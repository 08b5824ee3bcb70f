"""The sentence queries of ``benchmarks.quality``: enough of them, several per photo, none a caption
of the demo set (so they test queries, not memory of the captions)."""

from benchmarks.quality import content_words
from benchmarks.quality_queries import SENTENCES
from tools import demo_captions


def test_every_photo_has_several_new_phrasings():
    assert set(SENTENCES) == set(demo_captions.PHOTOS)
    sentences = [s for phrasings in SENTENCES.values() for s in phrasings]
    assert len(sentences) >= 40 and len(set(sentences)) == len(sentences)
    assert all(len(set(p)) >= 3 for p in SENTENCES.values())
    captions = {c.lower().rstrip(".") for _, cs in demo_captions.PHOTOS.values() for c in cs}
    assert not captions & {s.lower().rstrip(".") for s in sentences}


def test_content_words_drop_request_phrasing_only():
    assert content_words("Show me the picture of the old Chinese pagoda.") == "old chinese pagoda"
    assert content_words("I am looking for a photo of a pet staring at me") == "pet staring"
    assert content_words("show me the picture") == "show me the picture"  # nothing left: the query itself
