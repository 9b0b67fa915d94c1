"""The word-level tokenizer of the ``steth-llava`` language model: the prompt JSON's own vocabulary.

Built from a fixed word list (the task sentence, the field names, sexes, recording-site words,
digits one by one, JSON punctuation, the answers), never from a corpus: no recording, label or
annotation shapes it. Lower-cased; an unknown word is ``[UNK]``. It is a plain
``PreTrainedTokenizerFast`` (``tokenizer.json``), so ``AutoTokenizer`` loads it.
"""

from __future__ import annotations

from steth_builtin.vlm_prompt import DEFAULT_ANSWERS, DEFAULT_TASK, PROMPT_FIELDS

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "<image>"]
_WORDS = (
    DEFAULT_TASK.lower().replace(".", " ").split()
    + [part for field in PROMPT_FIELDS for part in field.split("_")] + ["task", "answer"]
    + ["f", "m", "posterior", "anterior", "lateral", "left", "right", "upper", "middle", "lower", "trachea",
       "thoracic", "rib", "chest", "back", "front", "base", "apex"]
    + [w for a in DEFAULT_ANSWERS.values() for w in a.split()] + ["no", "yes", "normal", "diagnosis"]
)
_PUNCT = list('{}[]:,."_-') + ["'"]


def vocabulary() -> list[str]:
    return list(dict.fromkeys(SPECIALS + _PUNCT + [str(d) for d in range(10)] + _WORDS))


def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` over :func:`vocabulary` (whitespace, punctuation and digits split)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]",
                                   eos_token="[EOS]", additional_special_tokens=["<image>"], model_max_length=256)
