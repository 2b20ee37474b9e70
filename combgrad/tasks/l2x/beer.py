"""A reader for the BeerAdvocate files of the L2X and I-MLE papers' text experiments.

The format, as the I-MLE/AIMLE reference code reads it (EdinburghNLP/torch-adaptive-imle,
``cli/l2x-cli.py`` and ``l2x/torch/utils.py``; the files come from Lei et al.'s
rationale data, distributed as ``l2x-data.tar.gz``):

* ``reviews.aspect{A}.train.txt`` and ``reviews.aspect{A}.heldout.txt``: one review
  per line, ``"<r0> <r1> <r2> <r3> <r4>\\t<token> <token> ..."``: five ratings in
  ``[0, 1]`` (one per aspect: 0 appearance, 1 aroma, 2 palate, 3 taste, 4 overall;
  the aspect-``A`` files are the reviews chosen for aspect ``A``), a tab, then the
  tokenised text separated by single spaces. The target is rating ``A``.
* ``annotations.json``: one JSON object per line, ``{"x": [tokens], "0": [[start,
  end], ...], "1": ..., ...}``: per aspect, the token ranges (end exclusive) that
  human annotators marked as explaining that aspect, used for the subset
  precision of the selected words.
* ``review+wiki.filtered.200.txt``: word embeddings, one word per line followed by
  its 200 values.

Token ids follow the reference: 0 padding, 1 start, 2 unknown, then the training
words in order of first appearance; sequences are padded and cut at the front
(keras' ``padding="pre"``) to ``max_len``. This module only reads the files; the
``combgrad l2x`` command trains on images, and a text model over these arrays is
the user's.

References:
    T. Lei, R. Barzilay, T. Jaakkola. Rationalizing Neural Predictions. EMNLP 2016.

    J. Chen, L. Song, M. J. Wainwright, M. I. Jordan. Learning to Explain. ICML 2018.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAD, START, UNKNOWN = 0, 1, 2
"""Reserved token ids."""

ASPECTS = ("appearance", "aroma", "palate", "taste", "overall")


@dataclass(frozen=True)
class Reviews:
    """Reviews of one file: token lists and their five ratings ``[N, 5]``."""

    tokens: list[list[str]]
    ratings: np.ndarray


@dataclass(frozen=True)
class BeerData:
    """One aspect's training and held-out reviews as padded id arrays.

    Attributes:
        train_ids: ``[N, max_len]`` int64 token ids.
        train_targets: ``[N]`` float32 ratings of the aspect.
        heldout_ids: ``[M, max_len]`` int64 (unknown words are :data:`UNKNOWN`).
        heldout_targets: ``[M]`` float32.
        vocabulary: word -> id (from the training file).
        aspect: The aspect's index.
    """

    train_ids: np.ndarray
    train_targets: np.ndarray
    heldout_ids: np.ndarray
    heldout_targets: np.ndarray
    vocabulary: dict[str, int]
    aspect: int


def read_reviews(path: str | os.PathLike) -> Reviews:
    """The reviews of one ``reviews.aspect{A}.*.txt`` file.

    Raises:
        ValueError: Naming the file and line of a malformed line.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "reviews.aspect0.train.txt"
        >>> _ = path.write_text("0.75 0.5 0.25 0 1\\tgreat head and colour\\n")
        >>> reviews = read_reviews(path)
        >>> reviews.tokens, reviews.ratings.tolist()
        ([['great', 'head', 'and', 'colour']], [[0.75, 0.5, 0.25, 0.0, 1.0]])
    """
    path = Path(path)
    tokens: list[list[str]] = []
    ratings: list[list[float]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            scores, separator, text = line.partition("\t")
            try:
                values = [float(value) for value in scores.split()]
            except ValueError:
                values = []
            if not separator or len(values) != len(ASPECTS):
                raise ValueError(
                    f"{path}:{number}: expected {len(ASPECTS)} ratings, a tab and the review's tokens, got {line[:60]!r}"
                )
            tokens.append(text.split(" "))
            ratings.append(values)
    return Reviews(tokens, np.asarray(ratings, dtype=np.float32).reshape(-1, len(ASPECTS)))


def build_vocabulary(token_lists: list[list[str]]) -> dict[str, int]:
    """Word -> id: the reserved ids, then the words in order of first appearance.

    Example:
        >>> build_vocabulary([["a", "b"], ["b", "c"]])
        {'<PAD>': 0, '<START>': 1, '<UNK>': 2, 'a': 3, 'b': 4, 'c': 5}
    """
    vocabulary = {"<PAD>": PAD, "<START>": START, "<UNK>": UNKNOWN}
    for tokens in token_lists:
        for token in tokens:
            if token not in vocabulary:
                vocabulary[token] = len(vocabulary)
    return vocabulary


def encode(token_lists: list[list[str]], vocabulary: dict[str, int], max_len: int) -> np.ndarray:
    """``[N, max_len]`` ids, padded with :data:`PAD` at the front and cut to the first ``max_len`` tokens.

    Example:
        >>> encode([["a", "b"], ["a", "x", "b", "a"]], {"a": 3, "b": 4}, 3).tolist()
        [[0, 3, 4], [3, 2, 4]]
    """
    ids = np.zeros((len(token_lists), max_len), dtype=np.int64)
    for row, tokens in enumerate(token_lists):
        kept = [vocabulary.get(token, UNKNOWN) for token in tokens[:max_len]]
        if kept:
            ids[row, max_len - len(kept) :] = kept
    return ids


def read_embeddings(path: str | os.PathLike, vocabulary: dict[str, int]) -> np.ndarray:
    """``[len(vocabulary), D]`` float32 embedding rows (zeros for words the file lacks).

    Raises:
        ValueError: Naming the file if its rows differ in length or it holds none.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "emb.txt"
        >>> _ = path.write_text("a 1 2\\nzz 3 4\\n")
        >>> read_embeddings(path, {"<PAD>": 0, "a": 1}).tolist()
        [[0.0, 0.0], [1.0, 2.0]]
    """
    path = Path(path)
    rows: dict[str, np.ndarray] = {}
    width = None
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            values = line.rstrip().split(" ")
            if len(values) < 2:
                continue
            if width is None:
                width = len(values) - 1
            if len(values) - 1 != width:
                raise ValueError(f"{path}:{number}: {len(values) - 1} values, but the first row has {width}")
            if values[0] in vocabulary:
                rows[values[0]] = np.asarray(values[1:], dtype=np.float32)
    if width is None:
        raise ValueError(f"{path}: holds no embedding rows")
    matrix = np.zeros((len(vocabulary), width), dtype=np.float32)
    for word, vector in rows.items():
        matrix[vocabulary[word]] = vector
    return matrix


def read_annotations(path: str | os.PathLike) -> list[dict]:
    """The annotated reviews of ``annotations.json`` (one JSON object per line; see the module docstring).

    Raises:
        ValueError: Naming the file and line of a line that is not such an object.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "annotations.json"
        >>> _ = path.write_text('{"x": ["a", "b"], "0": [[0, 1]]}\\n')
        >>> read_annotations(path)[0]["0"]
        [[0, 1]]
    """
    path = Path(path)
    items = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from error
            if not isinstance(item, dict) or not isinstance(item.get("x"), list):
                raise ValueError(f"{path}:{number}: expected an object with the review's tokens under 'x'")
            items.append(item)
    return items


def load_beer(folder: str | os.PathLike, aspect: int = 0, *, max_len: int = 350) -> BeerData:
    """One aspect's training and held-out reviews from ``folder`` (the reference's ``data/``).

    Raises:
        FileNotFoundError: Naming the missing file.
        ValueError: On a bad aspect or a malformed file (named).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "reviews.aspect1.train.txt").write_text("0 0.5 0 0 0\\tgood nose\\n")
        >>> _ = (folder / "reviews.aspect1.heldout.txt").write_text("0 1 0 0 0\\tgood smell\\n")
        >>> data = load_beer(folder, 1, max_len=3)
        >>> data.train_ids.tolist(), data.heldout_ids.tolist(), data.heldout_targets.tolist()
        ([[0, 3, 4]], [[0, 3, 2]], [1.0])
    """
    if isinstance(aspect, bool) or not isinstance(aspect, int) or not 0 <= aspect < len(ASPECTS):
        raise ValueError(f"beer: aspect must be an integer in 0..{len(ASPECTS) - 1}, got {aspect!r}")
    root = Path(folder)
    paths = {split: root / f"reviews.aspect{aspect}.{split}.txt" for split in ("train", "heldout")}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"beer: {path} does not exist (the BeerAdvocate files of l2x-data.tar.gz)")
    train, heldout = read_reviews(paths["train"]), read_reviews(paths["heldout"])
    vocabulary = build_vocabulary(train.tokens)
    return BeerData(
        train_ids=encode(train.tokens, vocabulary, max_len),
        train_targets=train.ratings[:, aspect].copy(),
        heldout_ids=encode(heldout.tokens, vocabulary, max_len),
        heldout_targets=heldout.ratings[:, aspect].copy(),
        vocabulary=vocabulary,
        aspect=aspect,
    )


__all__ = [
    "ASPECTS", "PAD", "START", "UNKNOWN", "BeerData", "Reviews", "build_vocabulary", "encode", "load_beer",
    "read_annotations", "read_embeddings", "read_reviews",
]
