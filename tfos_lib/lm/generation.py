"""Text generation from a next-token Keras model, as a SavedModel signature: prompt in, text out.

:func:`make_generator` wraps a trained model (ids ``(batch, time)`` in, logits
``(batch, time, vocabulary)`` out) with its vocabulary and tokeniser in a
``tf.Module`` whose ``generate`` is a ``tf.function``. Tokenising, sampling and
detokenising are TensorFlow ops, so the SavedModel needs no Python of this project::

    generate = tf.saved_model.load("model").signatures["serving_default"]
    generate(prompt=tf.constant("It is a truth"), num_tokens=tf.constant(200),
             temperature=tf.constant(0.8), top_k=tf.constant(0), seed=tf.constant(0, tf.int64))["text"]

Sampling: the logits of the last position, over the last ``seq_length`` tokens (the
model is trained on stateless windows of that length), divided by ``temperature``;
``top_k`` > 0 keeps only the k most likely tokens; ``temperature`` <= 0 is greedy (the
book's ``argmax``). Draws are ``tf.random.stateless_categorical`` with seed
``(seed, step)``: the same seed gives the same text.

The tokenisers mirror :func:`tfos_lib.datasets.books.tokenize_py` and
``detokenize_py`` (which the caller passes in as ``symbols``), so the job's Python and the
SavedModel agree. Runs wherever TensorFlow runs (the chief, or any serving process).
"""

from __future__ import annotations

from tfos_lib.tfenv import import_tensorflow

__all__ = ["generate", "make_generator", "save_generator"]


_RE2_SPECIAL = set("\\.^$|?*+()[]{}-/")


def _literal(text: str) -> str:
    """``text`` as an RE2 pattern matching it literally (RE2 refuses escapes of letters and ``_``)."""
    return "".join("\\n" if c == "\n" else "\\" + c if c in _RE2_SPECIAL else c for c in text)


def make_generator(model, vocabulary: list[str], mode: str, seq_length: int, symbols: dict[str, str],
                   opening: tuple[str, ...] = ()):
    """A ``tf.Module`` with ``generate(prompt, num_tokens, temperature, top_k, seed) -> {"text", "continuation"}``.

    Args:
        model: Keras model, int ids ``(batch, time)`` -> logits ``(batch, time, len(vocabulary))``.
        vocabulary: token of each id; id 0 is what unknown tokens map to.
        mode: ``"char"`` or ``"word"`` (see :mod:`tfos_lib.datasets.books`).
        seq_length: the longest context the model sees (its training window).
        symbols: for ``"word"``: symbol -> token, in replacement order.
        opening: the symbols that attach to the next word when detokenising (the others to the word before).
    """
    tf = import_tensorflow()

    class Generator(tf.Module):
        def __init__(self):
            super().__init__(name="generator")
            self.model = model
            self.vocabulary = tf.constant(vocabulary)
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(self.vocabulary, tf.range(len(vocabulary), dtype=tf.int64)), 0)

        def tokenize(self, text):
            text = tf.strings.regex_replace(text, "\r\n?", "\n")
            if mode == "char":
                return tf.strings.unicode_split(text, "UTF-8")
            text = tf.strings.regex_replace(text, "\u2019", "'")
            for symbol, token in symbols.items():
                text = tf.strings.regex_replace(text, _literal(symbol), f" {token} ")
            return tf.strings.split(tf.strings.lower(text, encoding="utf-8"))

        def detokenize(self, ids):
            tokens = tf.gather(self.vocabulary, ids)
            if mode == "char":
                return tf.strings.reduce_join(tokens)
            text = tf.strings.reduce_join(tokens, separator=" ")
            for symbol, token in symbols.items():
                rewrite = symbol.replace("\\", "\\\\")
                if symbol in opening:
                    text = tf.strings.regex_replace(text, _literal(token.lower() + " "), rewrite)
                    text = tf.strings.regex_replace(text, _literal(token.lower()), rewrite)
                else:
                    text = tf.strings.regex_replace(text, _literal(" " + token.lower()), rewrite)
            return tf.strings.regex_replace(text, "\n ", "\n")

        def next_token(self, ids, step, temperature, top_k, seed):
            logits = self.model(ids[-seq_length:][None], training=False)[0, -1]
            size = tf.shape(logits)[0]
            values, indices = tf.math.top_k(logits, tf.where(top_k > 0, tf.minimum(top_k, size), size))
            draw = tf.random.stateless_categorical(values[None] / tf.maximum(temperature, 1e-6), 1,
                                                   seed=tf.stack([seed, tf.cast(step, tf.int64)]))[0, 0]
            return tf.where(temperature > 0, tf.gather(indices, draw), indices[0])

        @tf.function(input_signature=[
            tf.TensorSpec([], tf.string, name="prompt"), tf.TensorSpec([], tf.int32, name="num_tokens"),
            tf.TensorSpec([], tf.float32, name="temperature"), tf.TensorSpec([], tf.int32, name="top_k"),
            tf.TensorSpec([], tf.int64, name="seed"),
        ], autograph=False)  # the loops below are TensorFlow's (while_loop, cond) or unrolled at tracing
        def generate(self, prompt, num_tokens, temperature, top_k, seed):
            ids = tf.cast(self.table.lookup(self.tokenize(prompt)), tf.int32)
            ids = tf.cond(tf.size(ids) > 0, lambda: ids, lambda: tf.zeros([1], tf.int32))
            start = tf.size(ids)

            def step(i, ids):
                return i + 1, tf.concat([ids, [self.next_token(ids, i, temperature, top_k, seed)]], 0)

            _, ids = tf.while_loop(lambda i, _: i < num_tokens, step, [tf.constant(0), ids],
                                   shape_invariants=[tf.TensorShape([]), tf.TensorShape([None])])
            return {"text": self.detokenize(ids), "continuation": self.detokenize(ids[start:])}

    return Generator()


def save_generator(generator, path: str) -> None:
    """Saves ``generator`` as a SavedModel whose ``serving_default`` (and ``generate``) signature generates text."""
    tf = import_tensorflow()
    signature = generator.generate.get_concrete_function()
    tf.saved_model.save(generator, path, signatures={"serving_default": signature, "generate": signature})


def generate(generator, prompt: str, num_tokens: int, temperature: float, top_k: int = 0, seed: int = 0) -> str:
    """Calls ``generator.generate`` (or a loaded SavedModel's) with Python values; returns the whole text."""
    tf = import_tensorflow()
    out = generator.generate(tf.constant(prompt), tf.constant(num_tokens, tf.int32),
                             tf.constant(temperature, tf.float32), tf.constant(top_k, tf.int32),
                             tf.constant(seed, tf.int64))
    return out["text"].numpy().decode("utf-8", errors="replace")
