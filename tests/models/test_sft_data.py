"""Training examples (curate/models/sft_data.py): what is supervised for text, pairs and chats (with and without a
chat template), truncation, packing, and the packed arrays. Known answers on a byte-level tokenizer trained here."""

from __future__ import annotations

import numpy as np
import pytest
from curate.kernels.common import IGNORE_INDEX

from curate.models.lm_train import train_tokenizer
from curate.models.sft_data import Example, build_batch, encode_examples, pack_rows
from tests.lm_fixtures import read_records

GSM = read_records("finetune_gsm8k.jsonl")[:3]
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [r["prompt"] + "\n\n" + r["response"] for r in read_records("finetune_gsm8k.jsonl")]
    return train_tokenizer(texts, 400, tmp_path_factory.mktemp("tok"))


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_text_pairs_and_chats_without_a_template(tokenizer):
    row = GSM[0]
    chat = {"messages": [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": "Yes."},
                         {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": row["response"]}]}
    examples, skipped = encode_examples([{"text": "a b c"}, row, chat], tokenizer, 10_000, 0, 0)
    assert skipped == 0
    text, pair, conversation = examples
    assert text.ids.tolist() == [0, *ids(tokenizer, "a b c"), 0] and text.supervised.tolist() == [False] + [True] * (
        len(text) - 1)
    # the prompt, the blank line curate puts before a response, the response: tokenised whole, as TRL does
    prompt, whole = ids(tokenizer, row["prompt"] + "\n\n"), ids(tokenizer, row["prompt"] + "\n\n" + row["response"])
    assert pair.ids.tolist() == [0, *whole, 0] and whole[:len(prompt)] == prompt
    assert pair.supervised.tolist() == [False] * (1 + len(prompt)) + [True] * (len(whole) - len(prompt) + 1)
    # every assistant turn's content is supervised, nothing else (and the end token after the last one)
    supervised = tokenizer.decode(conversation.ids[conversation.supervised][:-1].tolist())
    assert supervised == "Yes." + row["response"] and conversation.supervised[-1]


def test_chats_with_a_template_supervise_exactly_the_assistant_turns(tokenizer):
    import copy

    tokenizer = copy.deepcopy(tokenizer)  # the module's tokenizer stays without a template
    tokenizer.chat_template = TEMPLATE
    chat = {"messages": [{"role": "user", "content": "Two plus two?"}, {"role": "assistant", "content": "Four."},
                         {"role": "user", "content": "And three?"}, {"role": "assistant", "content": "Five."}]}
    (example,), _ = encode_examples([chat], tokenizer, 10_000, 0, 0)
    rendered = tokenizer.apply_chat_template(chat["messages"], tokenize=False)
    assert tokenizer.decode(example.ids.tolist()) == rendered
    taught = tokenizer.decode(example.ids[example.supervised].tolist())
    assert taught == "<|assistant|>Four.\n<|assistant|>Five.\n"


def test_truncation_keeps_the_start_and_skips_rows_with_nothing_to_learn(tokenizer):
    prompt = len(ids(tokenizer, GSM[1]["prompt"] + "\n\n"))
    examples, skipped = encode_examples([GSM[1], GSM[1]], tokenizer, prompt + 1, 0, 0)
    assert examples == [] and skipped == 2  # start + prompt fill the window: no response token left
    (cut,), _ = encode_examples([GSM[1]], tokenizer, prompt + 5, 0, 0)
    assert len(cut) == prompt + 5 and cut.scored == 4


def test_packing_fills_rows_in_order_and_positions_restart():
    assert pack_rows([3, 4, 2, 5, 1], 7) == [[0, 1], [2, 3], [4]]
    examples = [Example(np.array([1, 2, 3]), np.array([False, True, True])),
                Example(np.array([4, 5]), np.array([False, True])), Example(np.array([6, 7, 8, 9]),
                                                                            np.array([False, False, True, True]))]
    batch = build_batch(examples, [[0, 1], [2]], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    i = IGNORE_INDEX
    # position t predicts token t + 1 of its own example when that token is supervised; never across examples
    assert batch.targets.tolist() == [[2, 3, i, 5, i], [i, 8, 9, i, i]]
    assert batch.tokens == 9 and batch.scored == 5
