"""Byte-level tokenizer for SMA.

Every UTF-8 byte b is one token with id ``b + BYTE_OFFSET``; the ids below the offset are special tokens. The
tokenizer is a plain `PreTrainedTokenizerFast` built with the `tokenizers` library, so `save_pretrained` writes a
`tokenizer.json` that `AutoTokenizer.from_pretrained(folder)` reloads without any custom code.
"""

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode


# Order fixes the ids: [PAD]=0 [BOS]=1 [EOS]=2 [MASK]=3 [CLS]=4 [SEP]=5.
SPECIAL_TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]"]
BYTE_OFFSET = len(SPECIAL_TOKENS)


def create_byte_tokenizer(model_max_length: int = 2048) -> PreTrainedTokenizerFast:
    """Build the SMA byte tokenizer (vocabulary size 262).

    A single sequence is encoded as ``bytes... [SEP]`` and a pair as ``A [SEP] B [SEP]`` with token type 1 for the
    second part. Special tokens written literally in the text (e.g. ``"[MASK]"``) are encoded as their ids, which
    `pipeline("fill-mask")` relies on.
    """
    # The ByteLevel pre-tokenizer maps each byte to a printable unicode character (GPT-2's table); the vocabulary is
    # keyed by those characters so that byte b gets id b + BYTE_OFFSET.
    byte_to_char = bytes_to_unicode()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({byte_to_char[b]: b + BYTE_OFFSET for b in range(256)})

    # All 256 bytes are in the vocabulary, so the unknown token is never produced; WordLevel still requires one.
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[PAD]"))
    # use_regex=False keeps the text in one piece (no GPT-2 word splitting); the Split then makes one token per byte.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            pre_tokenizers.Split(Regex("."), behavior="isolated"),
        ]
    )
    sep_id = SPECIAL_TOKENS.index("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A [SEP]",
        pair="$A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[SEP]", sep_id)],
    )
    # Maps the byte characters back to bytes and decodes them as UTF-8, so multi-byte characters round-trip.
    tokenizer.decoder = decoders.ByteLevel()

    # Declaring the special tokens registers them as added tokens: they are matched in the raw text before
    # pre-tokenization and dropped by decode(skip_special_tokens=True).
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        mask_token="[MASK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=model_max_length,
        padding_side="right",
    )
