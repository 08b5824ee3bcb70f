"""JavaScript clients against the served graph: the official ``openai`` npm package and plain
``fetch`` (tests/js, run by Node's own test runner). ``make test-deps`` installs Node and the
package (``npm ci`` in tests/js); a machine without them fails here, it does not skip."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import assets
from tests.speech_corpus import THREE, recording, wav_bytes

pytestmark = pytest.mark.slow
JS = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("js-media")
    (d / "cat.jpg").write_bytes(assets.photo("chelsea"))
    (d / "en.wav").write_bytes(assets.speech(assets.EN_SENTENCE))
    (d / "de.wav").write_bytes(assets.speech(assets.DE_SENTENCE, voice="de"))
    (d / "three.wav").write_bytes(wav_bytes(recording(THREE)))  # several segments: several deltas
    return d


@pytest.mark.parametrize("suite", ["openai.test.mjs", "fetch.test.mjs"])
def test_js_suite_passes_against_the_served_graph(base_url, media, suite):
    node = shutil.which("node")
    assert node, "Node.js is missing: run `make test-deps`"
    assert (JS / "node_modules" / "openai").is_dir(), "tests/js has no node_modules: run `make test-deps`"
    env = {
        **os.environ,
        "MMSERVE_URL": base_url,
        "MMSERVE_MEDIA": str(media),
        "MMSERVE_EN_SENTENCE": assets.EN_SENTENCE,
    }
    run = subprocess.run(
        [node, "--test", suite], cwd=JS, env=env, capture_output=True, text=True, timeout=300
    )
    print(run.stdout[-4000:], run.stderr[-2000:])
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass 0" not in run.stdout
