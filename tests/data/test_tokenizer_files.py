"""Tokenizer files: GPT-2 vocab.json + merges.txt import, GPT-2's byte alphabet, file permissions."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from microgpt_data import ENDOFTEXT, Tokenizer, TokenizerFileError, to_hf_tokenizer
from microgpt_data.tokenizer_files import CONFIG_FILE, RANKS_FILE, gpt2_byte_decoder


def test_gpt2_byte_decoder_is_a_bijection_onto_bytes():
    decoder = gpt2_byte_decoder()
    assert sorted(decoder.values()) == list(range(256))
    assert decoder["Ġ"] == ord(" ") and decoder["!"] == ord("!")
    assert all(c.isprintable() and not c.isspace() for c in decoder)


@pytest.fixture()
def gpt2_files(small_tokenizer, tmp_path):
    """vocab.json + merges.txt written by Hugging Face tokenizers for the small vocabulary."""
    hf = to_hf_tokenizer(small_tokenizer)
    vocab_path, merges_path = hf.model.save(str(tmp_path))
    vocab = json.loads(Path(vocab_path).read_text())
    vocab[ENDOFTEXT] = small_tokenizer.eot_id  # as GPT-2's vocab.json carries it
    Path(vocab_path).write_text(json.dumps(vocab))
    return vocab_path, merges_path


def test_from_gpt2_files_keeps_ids(small_tokenizer, small_texts, gpt2_files):
    imported = Tokenizer.from_gpt2_files(*gpt2_files)
    assert imported.ranks == small_tokenizer.ranks
    assert imported.special_tokens == small_tokenizer.special_tokens
    for text in small_texts[:5]:
        assert imported.encode(text) == small_tokenizer.encode(text)


def test_from_gpt2_files_adds_missing_eot(small_tokenizer, gpt2_files):
    vocab_path, merges_path = gpt2_files
    vocab = json.loads(Path(vocab_path).read_text())
    del vocab[ENDOFTEXT]
    Path(vocab_path).write_text(json.dumps(vocab))
    assert Tokenizer.from_gpt2_files(vocab_path, merges_path).eot_id == small_tokenizer.eot_id


def test_merges_out_of_id_order_are_refused(gpt2_files):
    vocab_path, merges_path = gpt2_files
    lines = Path(merges_path).read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]  # after the "#version" header
    Path(merges_path).write_text("\n".join(lines) + "\n")
    with pytest.raises(TokenizerFileError, match=r"merges.txt:3: id \d+ .* does not rise in merge order"):
        Tokenizer.from_gpt2_files(vocab_path, merges_path)


def test_missing_and_malformed_files(gpt2_files, tmp_path):
    vocab_path, merges_path = gpt2_files
    with pytest.raises(TokenizerFileError, match="nothing.json does not exist"):
        Tokenizer.from_gpt2_files(tmp_path / "nothing.json", merges_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerFileError, match=r"bad.json: not valid JSON: .* \(line 1, column 2\)"):
        Tokenizer.from_gpt2_files(bad, merges_path)
    bad.write_text('{"a": 0}')
    with pytest.raises(TokenizerFileError, match="lacks the single-byte token"):
        Tokenizer.from_gpt2_files(bad, merges_path)


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_saved_files_get_the_permissions_of_a_plain_write(small_tokenizer, tmp_path, umask):
    """Not mkstemp's 0o600: a shared tokenizer (or model folder) stays readable by others."""
    previous = os.umask(umask)
    try:
        folder = small_tokenizer.save(tmp_path / "tok")
        small_tokenizer.save(folder)  # overwriting too
    finally:
        os.umask(previous)
    for name in (RANKS_FILE, CONFIG_FILE):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o666 & ~umask, name
    assert sorted(p.name for p in folder.iterdir()) == sorted([RANKS_FILE, CONFIG_FILE])


FIXTURES = Path(__file__).parent.parent / "fixtures" / "gpt2_tiny"


@pytest.fixture()
def saved(small_tokenizer, tmp_path):
    """A good tokenizer folder, and a helper that rewrites one of its files."""
    folder = small_tokenizer.save(tmp_path / "tok")

    def rewrite(name: str, data: bytes | str) -> Path:
        path = folder / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path

    return folder, rewrite


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("IQ== -1", r"id b?'-1' is not an integer in \[0, 2\*\*32\)"),
        ("IQ== 4294967296", r"id b?'4294967296' is not an integer"),
        ("IQ== 1.5", r"id b?'1.5' is not an integer"),
        ("IQ== +3", r"id b?'\+3' is not an integer"),
        ("IQ== 1_0", r"id b?'1_0' is not an integer"),
        ("IQ==", r"bad line"),
        ("not-base64!! 5", r"bad line"),
        (" 7", r"bad line"),
    ],
)
def test_bad_rank_lines_name_the_file_and_line(saved, line, match):
    """A negative rank was an OverflowError from tiktoken; the others slipped through int()."""
    folder, rewrite = saved
    lines = (folder / RANKS_FILE).read_text().splitlines()
    lines[0] = line
    rewrite(RANKS_FILE, "\n".join(lines) + "\n")
    with pytest.raises(TokenizerFileError, match=rf"{RANKS_FILE}:1: .*{match}"):
        Tokenizer.load(folder)


def test_repeated_rank_ids_name_both_lines(saved):
    folder, rewrite = saved
    lines = (folder / RANKS_FILE).read_text().splitlines()
    lines[300] = lines[300].split()[0] + " 5"
    rewrite(RANKS_FILE, "\n".join(lines) + "\n")
    with pytest.raises(TokenizerFileError, match=rf"{RANKS_FILE}:301: id 5 was already given on line 6"):
        Tokenizer.load(folder)


def _config(folder) -> dict:
    return json.loads((folder / CONFIG_FILE).read_text())


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("format_version", "1", "format_version '1' is not supported"),
        ("format_version", 1.0, "format_version 1.0 is not supported"),
        ("format_version", True, "format_version True is not supported"),
        ("format_version", None, "format_version None is not supported"),
        ("pattern", 5, "field 'pattern' must be a str, got int"),
        ("pattern", None, "field 'pattern' must be a str, got NoneType"),
        ("name", 7, "field 'name' must be a str, got int"),
        ("name", ["a"], "field 'name' must be a str, got list"),
        ("eot_token", 511, "field 'eot_token' must be a str"),
        ("eot_token", "<|nope|>", "field 'eot_token' '<|nope|>' is not one of the special tokens"),
        ("special_tokens", [ENDOFTEXT], "field 'special_tokens' must be a dict, got list"),
        ("special_tokens", {ENDOFTEXT: "511"}, r"the id of '<\|endoftext\|>' must be an integer .* str"),
        ("special_tokens", {ENDOFTEXT: 1.5}, r"the id of '<\|endoftext\|>' must be an integer .* float"),
        ("special_tokens", {ENDOFTEXT: True}, r"the id of '<\|endoftext\|>' must be an integer .* bool"),
        ("special_tokens", {ENDOFTEXT: -1}, r"the id of '<\|endoftext\|>' must be an integer .* -1"),
        ("special_tokens", {ENDOFTEXT: 2**40}, r"must be an integer in \[0, 2\*\*32\)"),
        ("special_tokens", {ENDOFTEXT: 511, "": 512}, "holds an empty token"),
        ("chat_template", {"default": "x"}, "field 'chat_template' must be a str, got dict"),
    ],
)
def test_config_fields_of_the_wrong_type_name_the_file_and_field(saved, field, value, match):
    folder, rewrite = saved
    config = _config(folder)
    config[field] = value
    rewrite(CONFIG_FILE, json.dumps(config))
    with pytest.raises(TokenizerFileError, match=rf"{CONFIG_FILE}: .*{match}"):
        Tokenizer.load(folder)


def test_a_chat_template_is_saved_in_the_config_and_read_back(small_tokenizer, tmp_path):
    """Hugging Face's key in tokenizer_config.json; absent for a tokenizer without a template."""
    small_tokenizer.save(tmp_path / "plain")
    assert "chat_template" not in _config(tmp_path / "plain")
    assert Tokenizer.load(tmp_path / "plain").chat_template is None
    template = "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    chat = Tokenizer(
        small_tokenizer.ranks, small_tokenizer.special_tokens, pattern=small_tokenizer.pattern,
        eot_token=small_tokenizer.eot_token, chat_template=template,
    )  # fmt: skip
    chat.save(tmp_path / "chat")
    assert _config(tmp_path / "chat")["chat_template"] == template
    back = Tokenizer.load(tmp_path / "chat")
    assert back.chat_template == template and back == small_tokenizer  # the template changes no id
    with pytest.raises(TokenizerFileError, match="chat_template must be a string or None, got int"):
        Tokenizer(small_tokenizer.ranks, small_tokenizer.special_tokens, chat_template=5)


def test_an_empty_special_token_in_the_config_never_hangs(saved):
    """`{"": id}` in tokenizer_config.json loaded, then `encode(allow_special=True)` looped forever."""
    from tests.data.test_tokenizer_checks import finishes

    folder, rewrite = saved
    config = _config(folder)
    config["special_tokens"] = {ENDOFTEXT: 511, "": 512}
    rewrite(CONFIG_FILE, json.dumps(config))
    with pytest.raises(TokenizerFileError, match=f"{CONFIG_FILE}: field 'special_tokens' holds an empty"):
        finishes(lambda: Tokenizer.load(folder).encode("a b", allow_special=True))


@pytest.mark.parametrize(
    ("extra", "match"),
    [({"nmae": "x"}, r"unknown field 'nmae' \(did you mean 'name'\?\); a tokenizer config holds format_"),
     ({"lowercase": True}, r"unknown field 'lowercase'; a tokenizer config holds format_version, name, ")],
)  # fmt: skip
def test_an_unknown_config_field_is_refused_naming_it(saved, extra, match):
    folder, rewrite = saved
    rewrite(CONFIG_FILE, json.dumps({**_config(folder), **extra}))
    with pytest.raises(TokenizerFileError, match=rf"{CONFIG_FILE}: {match}"):
        Tokenizer.load(folder)


DEEP = ["[" * 200_000 + "]" * 200_000, '{"a": ' * 200_000 + "0" + "}" * 200_000]


@pytest.mark.parametrize("nested", DEEP, ids=["lists", "objects"])
def test_json_nested_too_deep_is_a_tokenizer_file_error(saved, tmp_path, nested):
    """200,000 levels of nesting were a RecursionError."""
    folder, rewrite = saved
    rewrite(CONFIG_FILE, nested)
    with pytest.raises(TokenizerFileError, match=f"{CONFIG_FILE}: not valid JSON here: nested too deeply"):
        Tokenizer.load(folder)
    vocab = tmp_path / "vocab.json"
    vocab.write_text(nested)
    with pytest.raises(TokenizerFileError, match="vocab.json: not valid JSON here: nested too deeply"):
        Tokenizer.from_gpt2_files(vocab, FIXTURES / "merges.txt")


def test_merges_that_are_not_utf8_name_the_file_and_byte(tmp_path):
    """Was an uncaught UnicodeDecodeError."""
    data = (FIXTURES / "merges.txt").read_bytes()
    merges = tmp_path / "merges.txt"
    merges.write_bytes(data[:20] + b"\xff\xfe" + data[20:])
    with pytest.raises(TokenizerFileError, match=r"merges.txt is not UTF-8 text: byte 20 is b'\\xff'"):
        Tokenizer.from_gpt2_files(FIXTURES / "vocab.json", merges)


@pytest.mark.parametrize("value", ["5", 1.5, True, None, -3, [5]], ids=repr)
def test_vocab_ids_that_are_not_integers(tmp_path, value):
    vocab = json.loads((FIXTURES / "vocab.json").read_text(encoding="utf-8"))
    vocab["Ġt"] = value
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(vocab))
    with pytest.raises(TokenizerFileError, match=r"vocab.json: the id of 'Ġt' must be an integer in \[0, 2"):
        Tokenizer.from_gpt2_files(path, FIXTURES / "merges.txt")


def test_vocab_with_repeated_ids_or_an_empty_token(tmp_path):
    vocab = json.loads((FIXTURES / "vocab.json").read_text(encoding="utf-8"))
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({**vocab, "<|pad|>": 3}))
    with pytest.raises(
        TokenizerFileError, match=r"vocab.json: ids must be unique; repeated ids include \[3\]"
    ):
        Tokenizer.from_gpt2_files(path, FIXTURES / "merges.txt")
    path.write_text(json.dumps({**vocab, "": 999}))
    with pytest.raises(TokenizerFileError, match="vocab.json: holds an empty token"):
        Tokenizer.from_gpt2_files(path, FIXTURES / "merges.txt")


# ---------------------------------------------------------------------------- damaged files, as a class
WRONG_VALUES = [None, True, 1.5, -1, 2**40, "x", "", [], {}]


def _damaged(data: bytes, *, json_file: bool, seed: int) -> list[tuple[str, bytes]]:
    """Variants of one good file: empty, truncated at several offsets, bytes flipped, binary garbage,
    a safetensors file, deep nesting, and (JSON) every top-level value of the wrong type."""
    import random

    rng = random.Random(seed)
    n = len(data)
    variants = [("empty", b""), ("nul", b"\x00" * 64), ("garbage", rng.randbytes(4096))]
    variants.append(("safetensors", (FIXTURES / "model.safetensors").read_bytes()))
    variants += [(f"deep-{i}", d.encode()) for i, d in enumerate(DEEP)]
    for cut in sorted({1, 2, 7, n // 7, n // 3, n // 2, n - 2, n - 1}):
        variants.append((f"truncated@{cut}", data[:cut]))
    for _ in range(8):
        at = rng.randrange(n)
        flip = bytes([data[at] ^ rng.choice([0x01, 0x20, 0x80, 0xFF])])
        variants.append((f"flip@{at}", data[:at] + flip + data[at + 1 :]))
    if json_file:
        good = json.loads(data)
        keys = list(good)[:6] if len(good) > 6 else list(good)
        for key in keys:
            for value in WRONG_VALUES:
                variants.append((f"{key!r}={value!r}", json.dumps({**good, key: value}).encode()))
        variants += [("list", b"[1, 2]"), ("string", b'"x"'), ("huge-int", b'{"a": ' + b"9" * 5000 + b"}")]
    return variants


def _load_outcome(load) -> str:
    """'ok' for a tokenizer that works (round trip, every id decodes), else the exception's class."""
    try:
        tokenizer = load()
        text = "Hello world, 123 naïve 😀\n\n"
        assert tokenizer.decode(tokenizer.encode(text)) == text
        tokenizer.decode(range(-1, tokenizer.vocab_size + 2))
        return "ok"
    except TokenizerFileError:
        return "TokenizerFileError"
    except BaseException as exc:  # noqa: BLE001 - what the test is about
        return f"{type(exc).__name__}: {str(exc)[:200]}"


def test_damaged_tokenizer_files_raise_only_tokenizer_file_error(small_tokenizer, tmp_path):
    """Every damaged variant of a good tokenizer folder and of GPT-2 vocab.json/merges.txt either
    loads a tokenizer that works or raises TokenizerFileError; nothing else, nothing hangs."""
    from tests.data.test_tokenizer_checks import finishes

    folder = small_tokenizer.save(tmp_path / "good")
    cases = []
    for name in (RANKS_FILE, CONFIG_FILE):
        data = (folder / name).read_bytes()
        for label, damaged in _damaged(data, json_file=name.endswith(".json"), seed=len(cases)):
            case = tmp_path / f"case{len(cases)}"
            small_tokenizer.save(case)
            (case / name).write_bytes(damaged)
            cases.append((f"{name} {label}", lambda case=case: Tokenizer.load(case)))
    for name in ("vocab.json", "merges.txt"):
        data = (FIXTURES / name).read_bytes()
        for label, damaged in _damaged(data, json_file=name.endswith(".json"), seed=len(cases)):
            case = tmp_path / f"case{len(cases)}"
            case.mkdir()
            for other in ("vocab.json", "merges.txt"):
                (case / other).write_bytes(damaged if other == name else (FIXTURES / other).read_bytes())
            cases.append(
                (
                    f"{name} {label}",
                    lambda c=case: Tokenizer.from_gpt2_files(c / "vocab.json", c / "merges.txt"),
                )
            )
    assert len(cases) > 150
    outcomes = finishes(lambda: {label: _load_outcome(load) for label, load in cases}, seconds=60)
    wrong = {
        label: outcome for label, outcome in outcomes.items() if outcome not in ("ok", "TokenizerFileError")
    }
    assert not wrong, wrong
    assert list(outcomes.values()).count("TokenizerFileError") > 100  # most damage is detected


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.0])
def test_a_truncated_merges_file_is_refused_not_read_as_another_tokenizer(tmp_path, keep):
    fixture = FIXTURES
    lines = (fixture / "merges.txt").read_text(encoding="utf-8").splitlines()
    (tmp_path / "merges.txt").write_text("\n".join(lines[: int(len(lines) * keep)]) + "\n", encoding="utf-8")
    with pytest.raises(
        TokenizerFileError, match=r"vocab.json holds \d+ token\(s\) that no merge of .* makes"
    ):
        Tokenizer.from_gpt2_files(fixture / "vocab.json", tmp_path / "merges.txt")
    assert Tokenizer.from_gpt2_files(fixture / "vocab.json", fixture / "merges.txt").special_tokens == {
        "<|endoftext|>": 269
    }
