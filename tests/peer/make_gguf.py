"""A tiny llama-architecture GGUF with seeded random weights, for a real llama.cpp peer.

Nothing is downloaded: the tokenizer and the weights are made here. The vocabulary
is a byte-level BPE ("gpt2") one restricted to printable ASCII, a space and a
newline, plus a few merges and three control tokens, so every token the model
can emit decodes to valid UTF-8. The rows of the output matrix for the control
tokens are zero: their logits are exactly 0 while the other tokens' are random,
so greedy decoding (``temperature=0``) never ends a reply early by sampling the
end-of-turn token -- replies run to ``max_tokens`` and are never empty.

The file is a few hundred KB and is the same bytes for the same ``seed``.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

__all__ = ["N_CTX", "N_EMBD", "N_VOCAB", "write_tiny_llama"]

N_EMBD = 64
N_HEAD = 4
N_LAYER = 2
N_FF = 128
N_CTX = 256

# byte-level BPE shows a space as "Ġ" and a newline as "Ċ"
_SPACE = "\u0120"
_NEWLINE = "\u010a"
_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_WORDS = ["he", "the", "in", "an", "and", "er", "on", "re", "at", "is", "it", "or", "en", "es"]
# ChatML, as many small chat models use; the server renders it with its Jinja engine
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _vocab() -> tuple[list[str], list[str], list[int]]:
    """(tokens, merges, token types): control tokens first, then bytes, then merged pieces."""
    tokens = list(_SPECIALS)
    types = [int(gguf.TokenType.CONTROL)] * len(_SPECIALS)
    singles = [chr(c) for c in range(ord("!"), ord("~") + 1)] + [_SPACE, _NEWLINE]
    tokens += singles
    types += [int(gguf.TokenType.NORMAL)] * len(singles)
    merges: list[str] = []
    known = set(tokens)

    def add(left: str, right: str) -> None:
        merges.append(f"{left} {right}")
        if left + right not in known:
            known.add(left + right)
            tokens.append(left + right)
            types.append(int(gguf.TokenType.NORMAL))

    for word in _WORDS:  # each word left to right, then with a leading space
        piece = word[0]
        for ch in word[1:]:
            add(piece, ch)
            piece += ch
        add(_SPACE, word[0])
        spaced = _SPACE + word[0]
        for ch in word[1:]:
            add(spaced, ch)
            spaced += ch
    return tokens, list(dict.fromkeys(merges)), types  # each merge once, first rank kept


N_VOCAB = len(_vocab()[0])


def write_tiny_llama(path: Path, seed: int = 1234) -> Path:
    """Write the model to ``path`` (deterministic for a given ``seed``) and return ``path``."""
    tokens, merges, types = _vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("llmrelay-tiny-random")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(_CHAT_TEMPLATE)

    embd = rand(n_vocab, N_EMBD, scale=1.0)
    output = rand(n_vocab, N_EMBD, scale=1.0)
    output[: len(_SPECIALS)] = 0.0  # control tokens: logit exactly 0, never the greedy pick
    writer.add_tensor("token_embd.weight", embd)
    for i in range(N_LAYER):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{blk}.attn_q.weight", rand(N_EMBD, N_EMBD, scale=0.1))
        writer.add_tensor(f"{blk}.attn_k.weight", rand(N_EMBD, N_EMBD, scale=0.1))
        writer.add_tensor(f"{blk}.attn_v.weight", rand(N_EMBD, N_EMBD, scale=0.1))
        writer.add_tensor(f"{blk}.attn_output.weight", rand(N_EMBD, N_EMBD, scale=0.1))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", rand(N_FF, N_EMBD, scale=0.1))
        writer.add_tensor(f"{blk}.ffn_up.weight", rand(N_FF, N_EMBD, scale=0.1))
        writer.add_tensor(f"{blk}.ffn_down.weight", rand(N_EMBD, N_FF, scale=0.1))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


if __name__ == "__main__":
    import sys

    out = write_tiny_llama(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf"))
    print(out, out.stat().st_size, "bytes,", N_VOCAB, "tokens")
