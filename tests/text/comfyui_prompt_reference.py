"""ComfyUI's prompt parser and chunker (``comfy/sd1_clip.py``: ``parse_parentheses``, ``token_weights``,
``escape_important`` / ``unescape_important``, ``SDTokenizer.tokenize_with_weights`` for SD 1.x: max_length 77,
pad with the end token, max_word_length 8), restated from its source as an independent reference. The word
tokenizer is passed in (``tokenize(text) -> ids`` without BOS/EOS), as ComfyUI calls the HF CLIP tokenizer;
embeddings ("embedding:name", ``_try_get_embedding``) come from ``embeddings``, a dict of file name -> the ids
standing for its vectors (``load_embed`` tries the name, then the name plus .safetensors, .pt, .bin)."""
from __future__ import annotations

import re


def parse_parentheses(string):
    result = []
    current_item = ""
    nesting_level = 0
    for char in string:
        if char == "(":
            if nesting_level == 0:
                if current_item:
                    result.append(current_item)
                current_item = "("
            else:
                current_item += char
            nesting_level += 1
        elif char == ")":
            nesting_level -= 1
            if nesting_level == 0:
                result.append(current_item + ")")
                current_item = ""
            else:
                current_item += char
        else:
            current_item += char
    if current_item:
        result.append(current_item)
    return result


def token_weights(string, current_weight):
    a = parse_parentheses(string)
    out = []
    for x in a:
        weight = current_weight
        if len(x) >= 2 and x[-1] == ")" and x[0] == "(":
            x = x[1:-1]
            xx = x.rfind(":")
            weight *= 1.1
            if xx > 0:
                try:
                    weight = float(x[xx + 1:])
                    x = x[:xx]
                except ValueError:
                    pass
            out += token_weights(x, weight)
        else:
            out += [(x, current_weight)]
    return out


def escape_important(text):
    return text.replace("\\)", "\0\1").replace("\\(", "\0\2")


def unescape_important(text):
    return text.replace("\0\1", ")").replace("\0\2", "(")


def load_embed(embeddings, name):
    for candidate in (name, name + ".safetensors", name + ".pt", name + ".bin"):
        if candidate in embeddings:
            return embeddings[candidate]
    return None


def try_get_embedding(embeddings, embedding_name):
    split_embed = embedding_name.split()
    embedding_name = split_embed[0]
    leftover = " ".join(split_embed[1:])
    embed = load_embed(embeddings, embedding_name)
    if embed is None:
        stripped = embedding_name.strip(",")
        if len(stripped) < len(embedding_name):
            embed = load_embed(embeddings, stripped)
            return embed, "{} {}".format(embedding_name[len(stripped):], leftover)
    return embed, leftover


def tokenize_with_weights(tokenize, text, start_token, end_token, max_length=77, max_word_length=8, embeddings=None):
    """-> list of chunks, each a list of (token, weight), max_length long."""
    embeddings = {} if embeddings is None else embeddings
    parsed_weights = token_weights(escape_important(text), 1.0)
    tokens = []
    for weighted_segment, weight in parsed_weights:
        split = re.split(" embedding:|\nembedding:", unescape_important(weighted_segment))
        words = [x for x in [split[0]] + ["embedding:" + x for x in split[1:]] if x != ""]
        for word in words:
            if word.startswith("embedding:"):
                embed, leftover = try_get_embedding(embeddings, word[len("embedding:"):].strip("\n"))
                if embed is not None:
                    tokens.append([(t, weight) for t in embed])
                if leftover == "":
                    continue
                word = leftover
            tokens.append([(t, weight) for t in tokenize(word)])
    batched_tokens = []
    batch = [(start_token, 1.0)]
    batched_tokens.append(batch)
    for t_group in tokens:
        is_large = len(t_group) >= max_word_length
        while len(t_group) > 0:
            if len(t_group) + len(batch) > max_length - 1:
                remaining_length = max_length - len(batch) - 1
                if is_large:
                    batch.extend(t_group[:remaining_length])
                    batch.append((end_token, 1.0))
                    t_group = t_group[remaining_length:]
                else:
                    batch.append((end_token, 1.0))
                    batch.extend([(end_token, 1.0)] * remaining_length)
                batch = [(start_token, 1.0)]
                batched_tokens.append(batch)
            else:
                batch.extend(t_group)
                t_group = []
    batch.append((end_token, 1.0))
    batch.extend([(end_token, 1.0)] * (max_length - len(batch)))
    return batched_tokens
