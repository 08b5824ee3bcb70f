"""The batched long-audio path's span arithmetic, without a model."""

import numpy as np

from models import whisper_batch
from models.speech import Segment, SpeechOptions, Transcript

RATE = 16_000


def test_merge_regions_keeps_spans_within_the_limit():
    regions = [(0, 4 * RATE), (5 * RATE, 9 * RATE), (10 * RATE, 14 * RATE), (30 * RATE, 31 * RATE)]
    assert whisper_batch.merge_regions(regions, 10 * RATE) == [
        (0, 9 * RATE),
        (10 * RATE, 14 * RATE),
        (30 * RATE, 31 * RATE),
    ]
    assert whisper_batch.merge_regions(regions, 14 * RATE) == [(0, 14 * RATE), (30 * RATE, 31 * RATE)]
    assert whisper_batch.merge_regions([(0, 40 * RATE), (41 * RATE, 42 * RATE)], 25 * RATE) == [
        (0, 40 * RATE),
        (41 * RATE, 42 * RATE),
    ]
    assert whisper_batch.merge_regions([], 25 * RATE) == []


def test_long_path_takes_greedy_unprompted_audio_over_one_window():
    long, short = np.zeros(31 * RATE, np.float32), np.zeros(30 * RATE, np.float32)
    assert whisper_batch.fits_long(long, SpeechOptions()) and not whisper_batch.fits_long(
        short, SpeechOptions()
    )
    for refused in (
        SpeechOptions(prompt="names"),
        SpeechOptions(beam_size=2),
        SpeechOptions(temperature=0.5),
        SpeechOptions(word_timestamps=True),
    ):
        assert not whisper_batch.fits_long(long, refused)


def test_joined_spans_move_segments_to_the_recording_clock():
    def part(*texts):
        segs = [Segment(id=i, start=float(i), end=i + 1.0, text=t) for i, t in enumerate(texts)]
        return Transcript(
            text=" ".join(texts),
            language="de",
            language_probability=0.9,
            duration=2.0,
            task="transcribe",
            segments=segs,
        )

    joined = whisper_batch._joined([part("a", "b"), part("c")], [0.5, 20.0], duration=40.0)
    assert joined.text == "a b c" and joined.language == "de" and joined.duration == 40.0
    assert [(s.id, s.start, s.end) for s in joined.segments] == [
        (0, 0.5, 1.5),
        (1, 1.5, 2.5),
        (2, 20.0, 21.0),
    ]


def test_a_stream_decodes_a_short_first_span_alone_then_the_rest_batch_by_batch():
    regions = [(i * 4 * RATE, (i * 4 + 3) * RATE) for i in range(20)]  # 3 s of speech every 4 s
    batches = whisper_batch._stream_batches(regions, batch_size=2)
    assert batches[0] == [(0, 7 * RATE)]  # <= FIRST_SPAN_SECONDS: two regions
    assert all(len(b) <= 2 for b in batches[1:]) and batches[1][0][0] == 8 * RATE
    assert [span for b in batches for span in b][-1][1] == 79 * RATE  # every region, in order
    assert whisper_batch._stream_batches([], batch_size=2) == []
