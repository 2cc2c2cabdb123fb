"""Hugging Face tokenizer.json in and out, and GPT-2's vocab.json + merges.txt out.

Our reader and writer never import `tokenizers`; these tests do (the dev venv has it, the `bpe`
extra), to check the files against the library itself: what we write, `tokenizers` loads back to
the same JSON and encodes to our ids; what `tokenizers` writes, we read to its ids.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_data import ENDOFTEXT, GPT2_PATTERN, DataError, Tokenizer, TokenizerFileError, train_bpe
from microgpt_data.merges import gpt2_byte_encoder, spell
from microgpt_data.tokenizer_files import read_gpt2_files, write_gpt2_files
from microgpt_data.tokenizer_json import (
    TOKENIZER_JSON_FILE,
    default_eot_token,
    read_tokenizer_json,
    tokenizer_json,
    write_tokenizer_json,
)

tokenizers = pytest.importorskip("tokenizers")

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA_TINY = Path(__file__).parent.parent / "fixtures" / "llama_tiny"
TEXTS = [
    "Hello, World! It's 2024: they'll've gone, we'd REALLY've said so. I'M SURE you'RE right.",
    "digits 0 12 345 6789 1234567890 3.14159 1e-9 ½ ² ٣ ๕",
    "  leading, trailing   \n\n\n\t\ttabs \r\n windows\r\n\u00a0nbsp\u3000ideographic\u2028line end   ",
    "naïve café e\u0301 日本語のテキスト 中文 한국어 Ελληνικά русский עברית العربية 😀👍🏽 🇫🇷",
    "def f(x):\n    return x ** 2  # it's fine\n\n\nprint(f(3))",
    "",
    " ",
    "a",
]


@pytest.fixture(scope="module")
def pydocs_tokenizer():
    """The seed-size tokenizer of the built-in corpus (what `train-tokenizer --data pydocs` makes)."""
    from microgpt_data import pydocs_texts

    return train_bpe(pydocs_texts("train"), 8192)


@pytest.fixture(scope="module")
def llama_style(small_texts):
    """A small BPE with Llama 3's split pattern and two special tokens."""
    return train_bpe(small_texts, 600, pattern=LLAMA3_PATTERN, special_tokens=["<|end_of_text|>", "<|x|>"])


@pytest.fixture(scope="module")
def spaced_specials(small_tokenizer):
    """Special ids after a gap and out of order, as tiktoken's cl100k_base has them."""
    return Tokenizer(small_tokenizer.ranks, {"<|fim|>": 1000, ENDOFTEXT: 600}, name="spaced")


def _written(tokenizer, tmp_path) -> Path:
    return write_tokenizer_json(tokenizer, tmp_path / TOKENIZER_JSON_FILE)


# ------------------------------------------------------------------------------------------ writing
@pytest.mark.parametrize("which", ["pydocs_tokenizer", "llama_style", "spaced_specials"])
def test_write_then_read_gives_the_same_tokenizer(request, tmp_path, which):
    tokenizer = request.getfixturevalue(which)
    path = _written(tokenizer, tmp_path)
    assert read_tokenizer_json(path, eot_token=tokenizer.eot_token) == tokenizer
    assert read_tokenizer_json(tmp_path) == tokenizer  # a folder; the default end of text is the same


@pytest.mark.parametrize("which", ["pydocs_tokenizer", "llama_style", "spaced_specials"])
def test_tokenizers_reads_the_written_file_back_to_the_same_json(request, tmp_path, which):
    """Every field as the library spells it: nothing it would drop, add or reorder by id."""
    tokenizer = request.getfixturevalue(which)
    path = _written(tokenizer, tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    assert json.loads(hf.to_str()) == json.loads(path.read_text(encoding="utf-8"))
    assert {t: hf.token_to_id(t) for t in tokenizer.special_tokens} == tokenizer.special_tokens


@pytest.mark.parametrize("which", ["pydocs_tokenizer", "llama_style", "spaced_specials"])
def test_written_file_encodes_fixed_texts_to_our_ids(request, tmp_path, which):
    tokenizer = request.getfixturevalue(which)
    hf = tokenizers.Tokenizer.from_file(str(_written(tokenizer, tmp_path)))
    for text in TEXTS:
        assert hf.encode(text).ids == tokenizer.encode(text), text
        assert hf.decode(tokenizer.encode(text)) == text
    with_special = f"one{tokenizer.eot_token}two {tokenizer.eot_token}"
    assert hf.encode(with_special).ids == tokenizer.encode(with_special, allow_special=True)


@pytest.fixture(scope="module", params=["pydocs_tokenizer", "llama_style"])
def ours_and_loaded(request, tmp_path_factory):
    """(our tokenizer, tokenizers.Tokenizer.from_file of the file we wrote for it)."""
    tokenizer = request.getfixturevalue(request.param)
    path = _written(tokenizer, tmp_path_factory.mktemp("written"))
    return tokenizer, tokenizers.Tokenizer.from_file(str(path))


@settings(max_examples=60)
@given(text=st.text())
def test_written_file_encodes_any_text_to_our_ids(ours_and_loaded, text):
    tokenizer, hf = ours_and_loaded
    assert hf.encode(text).ids == tokenizer.encode(text, allow_special=True)  # tokenizers parses specials


def test_a_token_no_merges_make_cannot_be_written(small_tokenizer, tmp_path):
    ranks = small_tokenizer.ranks
    ranks[b"qzx"] = max(ranks.values()) + 1  # no q+z or z+x token: merging never reaches it
    odd = Tokenizer(ranks, {ENDOFTEXT: max(ranks.values()) + 1})
    with pytest.raises(DataError, match=r"token b'qzx' .* cannot be reached by merging lower-ranked"):
        write_tokenizer_json(odd, tmp_path / TOKENIZER_JSON_FILE)
    assert not (tmp_path / TOKENIZER_JSON_FILE).exists()


# ------------------------------------------------------------------------------------------ reading
def _trained_by_tokenizers(texts, pre_tokenizer, *, ignore_merges: bool):
    """A tokenizer.json as `tokenizers` makes it: BpeTrainer, then special tokens after the merges."""
    pre = tokenizers.pre_tokenizers
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = pre_tokenizer(pre)
    hf.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=700, min_frequency=2, show_progress=False, initial_alphabet=pre.ByteLevel.alphabet()
    )
    hf.train_from_iterator(texts, trainer=trainer)
    body = json.loads(hf.to_str())
    body["model"]["ignore_merges"] = ignore_merges
    hf = tokenizers.Tokenizer.from_str(json.dumps(body))
    hf.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    return hf


PRE_TOKENIZERS = {
    "llama3-split": lambda pre: pre.Sequence(
        [
            pre.Split(tokenizers.Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    ),
    "gpt2-bytelevel": lambda pre: pre.ByteLevel(add_prefix_space=False, use_regex=True),
}


@pytest.fixture(scope="module", params=[(k, m) for k in PRE_TOKENIZERS for m in (True, False)], ids=str)
def hf_made(request, small_texts, tmp_path_factory):
    """(kind, path, tokenizers.Tokenizer, ours) of a file `tokenizers` trained and saved, with
    ignore_merges either way, and our reading of it."""
    kind, ignore_merges = request.param
    hf = _trained_by_tokenizers(small_texts, PRE_TOKENIZERS[kind], ignore_merges=ignore_merges)
    path = tmp_path_factory.mktemp(kind) / TOKENIZER_JSON_FILE
    hf.save(str(path))
    return kind, path, hf, read_tokenizer_json(path)


def test_a_file_tokenizers_made_reads_to_its_ids(hf_made, small_texts):
    kind, path, hf, ours = hf_made
    assert ours.eot_token == "<|end_of_text|>"  # the default: the first spelled like an end of text
    assert ours.special_tokens == {t: hf.token_to_id(t) for t in ours.special_tokens}
    assert ours.pattern == (GPT2_PATTERN if kind == "gpt2-bytelevel" else LLAMA3_PATTERN)
    for text in [*TEXTS, *small_texts[-5:]]:
        assert ours.encode(text) == hf.encode(text).ids, text[:60]


@settings(max_examples=40)
@given(text=st.text())
def test_a_file_tokenizers_made_encodes_any_text_to_its_ids(hf_made, text):
    _, _, hf, ours = hf_made
    assert ours.encode(text, allow_special=True) == hf.encode(text).ids


def test_the_committed_llama_fixture_reads_to_transformers_ids():
    """tests/fixtures/llama_tiny: saved by PreTrainedTokenizerFast; ids from AutoTokenizer."""
    reference = json.loads((LLAMA_TINY / "reference.json").read_text(encoding="utf-8"))
    ours = read_tokenizer_json(LLAMA_TINY / TOKENIZER_JSON_FILE)
    assert ours.special_tokens == reference["special_tokens"]
    assert (ours.eot_token, ours.pattern, ours.name) == ("<|end_of_text|>", LLAMA3_PATTERN, "llama_tiny")
    assert [ours.encode(t) for t in reference["texts"]] == reference["text_ids"]
    assert (
        read_tokenizer_json(LLAMA_TINY, eot_token="<|eot_id|>").eot_id
        == reference["special_tokens"]["<|eot_id|>"]
    )


def _converted_like_llama3(tokenizer: Tokenizer) -> dict:
    """The body transformers' TikTokenConverter makes of tiktoken ranks (how Llama 3's file was
    made): every split of each token into two tokens is a merge, by the token's rank, then by the
    parts' ranks; ignore_merges true; the special tokens after the vocabulary."""
    ranks = tokenizer.ranks
    merges = []
    for token in sorted(ranks, key=ranks.__getitem__):
        splits = [(token[:i], token[i:]) for i in range(1, len(token))]
        splits = [(a, b) for a, b in splits if a in ranks and b in ranks]
        merges += sorted(splits, key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
    body = tokenizer_json(tokenizer)
    for token in tokenizer.special_tokens:
        del body["model"]["vocab"][token]
    body["model"]["merges"] = [[spell(a), spell(b)] for a, b in merges]
    body["model"]["ignore_merges"] = True
    return body


def test_a_llama3_style_file_that_lists_every_split_reads_exactly(pydocs_tokenizer, tmp_path):
    body = _converted_like_llama3(pydocs_tokenizer)
    assert len(body["model"]["merges"]) > 1.2 * (len(pydocs_tokenizer.ranks) - 256)  # many duplicates
    path = tmp_path / TOKENIZER_JSON_FILE
    path.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
    ours = read_tokenizer_json(path)
    assert ours == pydocs_tokenizer
    hf = tokenizers.Tokenizer.from_file(str(path))
    for text in TEXTS:
        assert hf.encode(text).ids == ours.encode(text), text


def test_merges_tiktoken_would_not_take_are_refused(tmp_path, small_tokenizer):
    """A token listed with another split than the one lowest-id-first merging takes: tokenizers then
    encodes that token's own text differently from tiktoken, so the file is refused."""
    ranks = small_tokenizer.ranks
    body = tokenizer_json(small_tokenizer)
    merges = body["model"]["merges"]
    encoder = gpt2_byte_encoder()
    for i, (left, right) in enumerate(merges):
        token = left + right
        word = small_tokenizer.decode([ranks[_bytes(token, encoder)]])
        if small_tokenizer.encode(word) != [ranks[_bytes(token, encoder)]]:
            continue  # the split pattern cuts this token's text: no piece is the whole token
        for cut in range(1, len(token)):
            a, b = token[:cut], token[cut:]
            if (a, b) != (left, right) and all(_bytes(p, encoder) in ranks for p in (a, b)):
                merges[i] = [a, b]
                break
        else:
            continue
        break
    path = tmp_path / TOKENIZER_JSON_FILE
    path.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(
        TokenizerFileError, match=rf"model.merges\[{i}\]: token {token!r} .* tiktoken makes it"
    ):
        read_tokenizer_json(path)
    assert tokenizers.Tokenizer.from_file(str(path)).encode(word).ids != small_tokenizer.encode(word)


def _bytes(spelled: str, encoder: dict[int, str]) -> bytes:
    decoder = {c: b for b, c in encoder.items()}
    return bytes(decoder[c] for c in spelled)


# ----------------------------------------------------------------------------------------- refusals
@pytest.fixture()
def good(small_tokenizer, tmp_path):
    """(body of a good file, write(body) -> path)."""

    def write(body) -> Path:
        path = tmp_path / TOKENIZER_JSON_FILE
        path.write_text(
            body if isinstance(body, str) else json.dumps(body, ensure_ascii=False), encoding="utf-8"
        )
        return path

    return tokenizer_json(small_tokenizer), write


def _set(body: dict, dotted: str, value) -> dict:
    """`body` with the field at `dotted` (a.b.0.c) set to `value`; `...` removes it."""
    body = json.loads(json.dumps(body))
    *parents, last = dotted.split(".")
    node = body
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return body


METASPACE = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
SPM_NORMALIZER = {
    "type": "Sequence",
    "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
    ],
}
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
REFUSED = [
    (
        "model.type",
        "Unigram",
        r"model Unigram \(SentencePiece\) is not supported; microGPT reads byte-level BPE",
    ),
    ("model.type", "WordPiece", r"model WordPiece \(BERT-style\) is not supported"),
    ("model.byte_fallback", True, r"model.byte_fallback true \(SentencePiece-style BPE"),
    ("model.dropout", 0.1, r"model.dropout 0.1 \(random merges\) is not supported"),
    ("model.continuing_subword_prefix", "##", r"model.continuing_subword_prefix '##' is not supported"),
    ("model.end_of_word_suffix", "</w>", r"model.end_of_word_suffix '</w>' is not supported"),
    (
        "pre_tokenizer",
        METASPACE,
        r"pre_tokenizer Metaspace \(SentencePiece\) is not supported; microGPT reads",
    ),
    ("pre_tokenizer", {"type": "Whitespace"}, r"pre_tokenizer Whitespace is not supported"),
    ("pre_tokenizer", None, r"pre_tokenizer null \(no byte-level pre-tokenizer\) is not supported"),
    (
        "pre_tokenizer",
        {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL]},
        r"pre_tokenizer Sequence\[Digits, ByteLevel\] is not supported",
    ),
    (
        "pre_tokenizer",
        {**BYTE_LEVEL, "add_prefix_space": True},
        r"pre_tokenizer: add_prefix_space true is not",
    ),
    ("pre_tokenizer", {**BYTE_LEVEL, "use_regex": False}, r"pre_tokenizer: use_regex false is not supported"),
    (
        "pre_tokenizer.pretokenizers.1.use_regex",
        True,
        r"pretokenizers\[1\] \(ByteLevel\): use_regex true is not",
    ),
    ("pre_tokenizer.pretokenizers.1.add_prefix_space", True, r"\(ByteLevel\): add_prefix_space true is not"),
    ("pre_tokenizer.pretokenizers.0.behavior", "Removed", r"\(Split\): behavior 'Removed' with invert False"),
    ("pre_tokenizer.pretokenizers.0.invert", True, r"\(Split\): behavior 'Isolated' with invert True"),
    (
        "pre_tokenizer.pretokenizers.0.pattern",
        {"String": " "},
        r"\(Split\): pattern \{\"String\": \" \"\} is not",
    ),
    (
        "pre_tokenizer.pretokenizers.0.pattern.Regex",
        "(unclosed",
        r"tiktoken rejected the tokenizer \(pattern",
    ),
    (
        "pre_tokenizer.pretokenizers.0.pattern.Regex",
        r"\p{L}+",
        r"does not split text into pieces that cover it",
    ),
    ("normalizer", {"type": "NFC"}, r"normalizer NFC is not supported; microGPT does not normalize text"),
    (
        "normalizer",
        SPM_NORMALIZER,
        r"normalizer Sequence\[Prepend, Replace\] \(SentencePiece\) is not supported",
    ),
    (
        "decoder",
        {"type": "Metaspace", "replacement": "▁"},
        r"decoder Metaspace \(SentencePiece\) is not supported",
    ),
    (
        "added_tokens.0.special",
        False,
        r"added_tokens\[0\] \('<\|endoftext\|>'\): an added token that is not special",
    ),
    ("added_tokens.0.lstrip", True, r"added_tokens\[0\] \('<\|endoftext\|>'\): lstrip true is not supported"),
    ("added_tokens.0.content", "", r"added_tokens\[0\]: content '' is empty"),
    ("added_tokens.0.id", 5, r"added_tokens\[0\] \('<\|endoftext\|>'\): id 5 is not the id tokenizers gives"),
    ("added_tokens.0.id", "511", r"added_tokens\[0\]: 'id' must be an integer in \[0, 2\*\*32\), got str"),
    ("added_tokens.0.content", "Ġthe", r"added_tokens\[0\] \('Ġthe'\): id \d+ is the mergeable token 'Ġthe'"),
    ("added_tokens.0", [1], r"added_tokens\[0\] must be an object, got \[1\]"),
    ("model.vocab.<|endoftext|>", 5, r"model.vocab: ids must be unique; repeated ids include \[5\]"),
    ("model.vocab.Ġthe", ..., r"model.merges\[\d+\]: merge result 'Ġthe' is not in .*model.vocab"),
    ("model.vocab.<|pad|>", 9999, r"model.vocab holds 1 token\(s\) that no merge of model.merges makes"),
    ("model.vocab", [], r"model: 'vocab' must be an object, got \[\]"),
    (
        "model.merges.0",
        ["Ġ", "t", "x"],
        r"model.merges\[0\] must be two tokens, as \"a b\" or \[\"a\", \"b\"\]",
    ),
    ("model.merges.0", "Ġ t x", r"model.merges\[0\] must be two tokens"),
    ("model.merges.0", ["Ġ", "zz"], r"model.merges\[0\]: merge part 'zz' is not in .*model.vocab"),
    ("model", ..., r"tokenizer.json has no 'model'"),
    ("model.vocab", ..., r"model has no 'vocab'"),
    ("model.merges", ..., r"model has no 'merges'"),
    ("pre_tokenizer", ..., r"tokenizer.json has no 'pre_tokenizer'"),
    ("pre_tokenizer.pretokenizers.0.pattern", ..., r"pretokenizers\[0\] \(Split\) has no 'pattern'"),
    ("pre_tokenizer.pretokenizers.0.type", ..., r"pretokenizers\[0\] has no 'type'"),
    ("added_tokens.0.content", ..., r"added_tokens\[0\] has no 'content'"),
    ("added_tokens.0.special", ..., r"added_tokens\[0\] \('<\|endoftext\|>'\) has no 'special'"),
]


@pytest.mark.parametrize(("field", "value", "match"), REFUSED, ids=[f"{f}={v!r:.30}" for f, v, _ in REFUSED])
def test_what_we_do_not_run_is_refused_naming_the_file_and_component(good, field, value, match):
    body, write = good
    path = write(_set(body, field, value))
    with pytest.raises(TokenizerFileError, match=match) as info:
        read_tokenizer_json(path)
    assert str(info.value).startswith(str(path)), str(info.value)


def test_merge_ids_out_of_order_are_refused(good):
    body, write = good
    merges = body["model"]["merges"]
    merges[3], merges[4] = merges[4], merges[3]
    with pytest.raises(
        TokenizerFileError, match=r"model.merges\[4\]: id \d+ of .* does not rise in merge order"
    ):
        read_tokenizer_json(write(body))


def test_bad_json_and_missing_files(good, tmp_path):
    body, write = good
    with pytest.raises(TokenizerFileError, match=r"tokenizer.json: not valid JSON: .*line 1, column 2"):
        read_tokenizer_json(write("{not json"))
    with pytest.raises(TokenizerFileError, match=r"tokenizer.json: must hold a JSON object \(a tokenizer\)"):
        read_tokenizer_json(write("[1, 2]"))
    with pytest.raises(TokenizerFileError, match=r"nowhere: file not found"):
        read_tokenizer_json(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerFileError, match=r"empty/tokenizer.json: file not found"):
        read_tokenizer_json(tmp_path / "empty")


def test_the_end_of_text_token(good, small_tokenizer):
    body, write = good
    assert read_tokenizer_json(write(body)).eot_token == ENDOFTEXT
    with pytest.raises(
        TokenizerFileError, match=r"tokenizer.json: the end-of-text token '</s>' is not one of"
    ):
        read_tokenizer_json(write(body), eot_token="</s>")
    renamed = _set(body, "added_tokens.0.content", "<|pad|>")
    renamed["model"]["vocab"]["<|pad|>"] = renamed["model"]["vocab"].pop(ENDOFTEXT)
    with pytest.raises(
        TokenizerFileError, match=r"no special token is spelled like an end of text .* \['<\|pad\|>'\]"
    ):
        read_tokenizer_json(write(renamed))
    assert read_tokenizer_json(write(renamed), eot_token="<|pad|>").eot_id == small_tokenizer.eot_id
    specials = {"<|begin_of_text|>": 10, "<|EOT_ID|>": 12, "</s>": 11, "<|im_end|>": 9}
    assert default_eot_token(specials, "here") == "</s>"


def test_string_merges_read_like_list_merges(good, small_tokenizer):
    body, write = good
    body["model"]["merges"] = [" ".join(m) for m in body["model"]["merges"]]  # older tokenizers
    assert read_tokenizer_json(write(body)) == small_tokenizer


def test_damaged_files_raise_only_tokenizer_file_error(good, small_tokenizer):
    """Truncations, flipped bytes and every top-level and model field of the wrong type: a working
    tokenizer or TokenizerFileError, nothing else."""
    import random

    body, write = good
    data = json.dumps(body, ensure_ascii=False).encode()
    rng = random.Random(0)
    variants = [data[:cut] for cut in (0, 1, len(data) // 3, len(data) - 1)]
    for _ in range(12):
        at = rng.randrange(len(data))
        variants.append(data[:at] + bytes([data[at] ^ rng.choice([0x01, 0x20, 0x80])]) + data[at + 1 :])
    wrong = [None, True, 1.5, -1, 2**40, "x", [], {}, [None], {"type": None}]
    for key in body:
        variants += [json.dumps({**body, key: value}).encode() for value in wrong]
    for key in body["model"]:
        variants += [json.dumps(_set(body, f"model.{key}", value)).encode() for value in wrong]
    outcomes = {}
    for i, variant in enumerate(variants):
        path = write(variant.decode("utf-8", errors="replace"))
        try:
            outcomes[i] = read_tokenizer_json(path) == small_tokenizer
        except TokenizerFileError:
            outcomes[i] = "refused"
    assert set(outcomes.values()) <= {True, False, "refused"}
    assert list(outcomes.values()).count("refused") > len(variants) // 2


# -------------------------------------------------------------------------------------- GPT-2 files
def test_gpt2_files_round_trip(pydocs_tokenizer, tmp_path):
    write_gpt2_files(pydocs_tokenizer, tmp_path)
    vocab, merges = tmp_path / "vocab.json", tmp_path / "merges.txt"
    assert merges.read_text(encoding="utf-8").splitlines()[0] == "#version: 0.2"
    assert read_gpt2_files(vocab, merges, eot_token=ENDOFTEXT) == (
        pydocs_tokenizer.ranks,
        pydocs_tokenizer.special_tokens,
    )
    assert Tokenizer.from_gpt2_files(vocab, merges) == pydocs_tokenizer
    hf = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(str(vocab), str(merges)))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    for text in TEXTS:
        assert hf.encode(text).ids == pydocs_tokenizer.encode(text), text


def test_gpt2_files_refuse_another_pattern(llama_style, tmp_path):
    with pytest.raises(
        DataError, match=r"vocab.json \+ merges.txt carry no split pattern .* write tokenizer.json"
    ):
        write_gpt2_files(llama_style, tmp_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ imports
def test_importing_the_reader_and_writer_never_imports_tokenizers():
    code = (
        "import sys, json\nimport microgpt_data.tokenizer_json, microgpt_data.tokenizer_files\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(json.loads(out.stdout))
    assert "microgpt_data.tokenizer_json" in loaded
    assert not {"tokenizers", "transformers", "datasets", "jax"} & loaded
