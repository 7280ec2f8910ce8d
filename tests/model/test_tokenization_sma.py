import json
import os
import subprocess
import sys

import pytest

from sma_hf.tokenization_sma import BYTE_OFFSET, SPECIAL_TOKENS, create_byte_tokenizer


SEP = 5
MASK = 3


@pytest.fixture(scope="module")
def tokenizer():
    return create_byte_tokenizer()


def byte_ids(text):
    return [b + 6 for b in text.encode("utf-8")]


def test_scheme_constants_and_vocab(tokenizer):
    assert BYTE_OFFSET == 6
    assert SPECIAL_TOKENS == ["[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]"]
    assert len(tokenizer) == 262
    assert tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3, 4, 5]
    assert (tokenizer.pad_token_id, tokenizer.mask_token_id, tokenizer.sep_token_id) == (0, 3, 5)
    assert tokenizer.padding_side == "right"
    assert tokenizer.model_max_length == 2048
    assert create_byte_tokenizer(model_max_length=64).model_max_length == 64


@pytest.mark.parametrize(
    "text",
    ["hello world", "CC(=O)Oc1ccccc1C(=O)O", "MKTAYIAKQRQISFVKSHFSRQ", "é漢", " a\n\tb  "],
    ids=["ascii", "smiles", "peptide", "utf8", "whitespace"],
)
def test_ids_are_bytes_plus_offset_then_sep(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert ids == byte_ids(text) + [SEP]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_ascii_ids_explicit(tokenizer):
    assert tokenizer("AC")["input_ids"] == [ord("A") + 6, ord("C") + 6, SEP]
    # "é" is two UTF-8 bytes, 0xC3 0xA9, and "漢" three.
    assert tokenizer("é漢")["input_ids"][:2] == [0xC3 + 6, 0xA9 + 6]
    assert len(tokenizer("é漢")["input_ids"]) == 2 + 3 + 1


def test_literal_mask_becomes_mask_id(tokenizer):
    ids = tokenizer("CC[MASK]O")["input_ids"]
    assert ids == byte_ids("CC") + [MASK] + byte_ids("O") + [SEP]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "CCO"


def test_pair_encoding(tokenizer):
    enc = tokenizer("AB", "C", return_token_type_ids=True)
    assert enc["input_ids"] == byte_ids("AB") + [SEP] + byte_ids("C") + [SEP]
    assert enc["token_type_ids"] == [0, 0, 0, 1, 1]


def test_batch_padding_and_attention_mask(tokenizer):
    enc = tokenizer(["CCO", "C"], padding=True, return_tensors="pt")
    assert enc["input_ids"].tolist() == [byte_ids("CCO") + [SEP], byte_ids("C") + [SEP, 0, 0]]
    assert enc["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert tokenizer.batch_decode(enc["input_ids"], skip_special_tokens=True) == ["CCO", "C"]


def test_truncation_to_model_max_length():
    tokenizer = create_byte_tokenizer(model_max_length=4)
    assert tokenizer("ABCDEFG", truncation=True)["input_ids"] == byte_ids("ABC") + [SEP]


def test_save_and_reload_in_fresh_process(tokenizer, tmp_path):
    texts = ["CC(=O)Oc1ccccc1C(=O)O", "é漢 [MASK] x", "MKT"]
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()

    # A fresh interpreter that never imports sma_hf: the folder must load with plain AutoTokenizer.
    script = (
        "import json, sys\n"
        "from transformers import AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "texts = json.loads(sys.argv[2])\n"
        "enc = tok(texts, padding=True)\n"
        "print(json.dumps({'ids': enc['input_ids'], 'mask': enc['attention_mask'], 'len': len(tok),\n"
        "                  'decoded': tok.batch_decode(enc['input_ids'], skip_special_tokens=True)}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), json.dumps(texts)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    reloaded = json.loads(result.stdout.strip().splitlines()[-1])

    expected = tokenizer(texts, padding=True)
    assert reloaded["ids"] == expected["input_ids"]
    assert reloaded["mask"] == expected["attention_mask"]
    assert reloaded["len"] == 262
    assert reloaded["decoded"] == ["CC(=O)Oc1ccccc1C(=O)O", "é漢  x", "MKT"]
