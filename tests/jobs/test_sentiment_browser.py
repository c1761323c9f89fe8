"""The sentiment job's exported page in a real browser: headless Chromium types, TF.js scores.

The job trains on a generated file and writes ``web/`` (index.html, model.json,
shards, token_index.csv, tf.min.js). The page is served on 127.0.0.1 by
``http.server`` in a thread, Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by Selenium) types each sentence into the text box, and the score the page
shows must equal the Python model's (the SavedModel the job wrote, fed by
:func:`tfos_lib.datasets.text.encode_py`) to 1e-4.

Needs: ``apt-get install -y chromium chromium-driver``, ``pip install selenium``,
and ``jobs/web/fetch_tfjs.sh`` (TF.js's bundle from npm). Without any of them the
tests are skipped, saying which is missing.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import tempfile
import threading

import numpy as np
import pytest

from jobs import sentiment
from tfos_lib.datasets import text

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # Without these Chromium keeps trying to reach Google's hosts, which this network refuses.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _missing() -> str | None:
    if not (os.path.isfile(CHROMIUM) and os.path.isfile(CHROMEDRIVER)):
        return ("Chromium or ChromeDriver not found (/usr/bin/chromium, /usr/bin/chromedriver): "
                "apt-get install -y chromium chromium-driver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "Selenium not installed: pip install 'selenium>=4.25,<4.52'"
    if not sentiment.DEFAULT_TFJS_BUNDLE.is_file():
        return f"no TensorFlow.js bundle at {sentiment.DEFAULT_TFJS_BUNDLE}: run jobs/web/fetch_tfjs.sh (npm)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@pytest.fixture(scope="module")
def exported(sentiment_run):
    """The job's output on a generated file (the session's one sentiment run, see conftest.py)."""
    out, metrics, _, _ = sentiment_run
    return out, metrics


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@contextlib.contextmanager
def _serve(directory):
    """Serves ``directory`` on 127.0.0.1 (a free port) from a thread; yields the URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture(scope="module")
def page_url(exported):
    with _serve(exported[0] / "web") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, seconds=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds).until(condition)


def _open(browser, url):
    from selenium.webdriver.common.by import By

    browser.get(url)
    _wait(browser, lambda d: d.find_element(By.ID, "status").get_attribute("data-ready") != "false")
    status = browser.find_element(By.ID, "status")
    assert status.get_attribute("data-ready") == "true", status.text
    return status.text


def _type(browser, sentence: str) -> tuple[float, str]:
    """Replaces the text box's content by typing ``sentence``; returns the page's score and known words."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = browser.find_element(By.ID, "review")
    box.clear()
    # Typing then deleting one character fires an input event even for the empty sentence.
    box.send_keys(sentence + "x", Keys.BACKSPACE)
    score = browser.find_element(By.ID, "score")
    _wait(browser, lambda d: score.get_attribute("data-text") == sentence, seconds=20)
    return float(score.get_attribute("data-score")), browser.find_element(By.ID, "known").text


def _python_scores(out, sentences):
    import tfos_lib

    tf = tfos_lib.import_tensorflow()
    model = tf.keras.models.load_model(str(out / "models" / "sentiment" / "1"))
    vocabulary = text.Vocabulary.from_csv((out / "web" / "token_index.csv").read_text())
    max_len = model.input_shape[1]
    ids = np.array([text.encode_py(text.tokenize_py(s), vocabulary.index, max_len) for s in sentences], np.int32)
    return model.predict(ids, verbose=0)[:, 0], vocabulary, max_len


def test_page_scores_equal_python_as_you_type(exported, page_url, browser):
    out, metrics = exported
    status = _open(browser, page_url)
    assert "TensorFlow.js 4.22.0" in status and "cpu backend" in status

    max_len = metrics["results"]["evaluation"]["distinct_sentence"]["max_len"]
    vocabulary = text.Vocabulary.from_csv((out / "web" / "token_index.csv").read_text())
    known = [t for t in vocabulary.tokens if t.isalpha()][:6]
    long_review = " ".join(known[i % len(known)] for i in range(3 * max_len))  # 3x the padding length
    sentences = [
        *sentiment.BOOK_PROBES,                                   # the book's four
        "I love Harry Potter!",
        "The Da Vinci Code sucks.",
        "I hate Mission Impossible",
        "Brokeback Mountain is AWESOME!!!",
        "That movie was boring and stupid...",
        "I really enjoyed the book, it's great",
        "zyxwv qwerty flibbertigibbet",                           # only unknown words
        "awesome zyxwv movie flibbertigibbet sucks",              # known and unknown mixed
        "constructor toString hasOwnProperty __proto__ valueOf",  # JS object keys are not words here
        "caf\u00e9 \u201cterrible\u201d \u2014 na\u00efve movie",  # non-ASCII: deleted, as in Python
        "it's   the   best,movie!I've;seen",                      # punctuation removed, not split on
        "  leading and trailing spaces  ",
        "line one\nline two awesome",                             # a newline separates words
        "12 3 4 numbers 2 movie",
        "",                                                       # empty box
        "?!.,;:'\"()[]{}",                                        # punctuation only
        long_review,                                              # longer than the padding: pre-truncated
        long_review + " terrible sucks hate",                     # the last words decide
    ]
    expected, python_vocabulary, python_max_len = _python_scores(out, sentences)
    assert python_max_len == max_len and python_vocabulary.index == vocabulary.index
    assert len(text.tokenize_py(long_review)) > max_len

    page = []
    for sentence, want in zip(sentences, expected, strict=True):
        score, known_words = _type(browser, sentence)
        page.append(score)
        assert abs(score - want) <= 1e-4, f"{sentence!r}: page {score:.6f}, Python {want:.6f}"
        words = [t for t in text.tokenize_py(sentence) if t in vocabulary.index]
        assert known_words == (" ".join(words) or "\u2013"), sentence
    assert len(page) >= 20
    # Different inputs give different scores, so the comparison above means something.
    assert np.ptp(page) > 0.05, page
    # The chief scored the book's probes through Spark's encoding; the page agrees.
    for probe, score in zip(sentiment.BOOK_PROBES, page):
        assert abs(metrics["results"]["probes"][probe]["distinct_sentence_model"] - score) <= 1e-4, probe


def test_page_from_a_file_url_says_how_to_serve_it(exported, browser):
    from selenium.webdriver.common.by import By

    browser.get((exported[0] / "web" / "index.html").as_uri())
    status = browser.find_element(By.ID, "status")
    _wait(browser, lambda d: status.get_attribute("data-ready") == "error", seconds=20)
    assert "python3 -m http.server" in status.text


def test_page_without_tfjs_bundle_says_so(exported, browser, tmp_path):
    from selenium.webdriver.common.by import By

    # A copy without the bundle, on its own port (so no cached tf.min.js applies).
    web = shutil.copytree(exported[0] / "web", tmp_path / "web", ignore=shutil.ignore_patterns("tf.min.js"))
    with _serve(web) as url:
        browser.get(url)
        status = browser.find_element(By.ID, "status")
        _wait(browser, lambda d: status.get_attribute("data-ready") == "error", seconds=20)
        assert "fetch_tfjs.sh" in status.text
