#!/usr/bin/env python3
"""Build a tiny random-weight Llama model and its tokenizer locally: no hub, no network, deterministic.

The folder is a normal Hugging Face model directory that vLLM (and transformers) load with
``HF_HUB_OFFLINE=1``: config.json, model.safetensors, tokenizer.json, tokenizer_config.json with a
ChatML chat template, generation_config.json.

Choices that matter:
- head_dim 64 (hidden 128 / 2 heads): vLLM's CPU attention rejects head_dim 16 at the first request.
- byte-level BPE trained on a fixed corpus, so any prompt tokenizes and the vocabulary is identical every run.
- ``torch.manual_seed``: identical weights every run, so greedy (temperature 0) output is reproducible.

Run it with the vLLM venv's python (it needs torch, transformers and tokenizers):
    .cache/vllm/venv/bin/python tests/servers/make_tiny_model.py OUT_DIR
"""
from __future__ import annotations

import argparse
import json
import os

# Fixed training text: the tokenizer (and therefore the model's vocabulary) depends only on this list.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! This is a tiny test model for an OpenAI compatible server.",
    "KAITO serves large language models on Kubernetes with vLLM or transformers.",
    "user assistant system: what is the capital of France? Paris is the capital.",
    "0 1 2 3 4 5 6 7 8 9 ten eleven twelve. Streaming tokens one by one.",
] * 20
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]

# ChatML, the template shape of the Qwen/phi models KAITO serves.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="output directory (created)")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2, help="keep hidden/heads = 64 for vLLM CPU")
    p.add_argument("--ctx", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build_tokenizer(vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.hidden // args.heads != 64:
        print(f"warning: head_dim {args.hidden // args.heads} != 64; vLLM CPU may reject it")

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    os.makedirs(args.out, exist_ok=True)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(args.vocab),
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        pad_token="</s>",
        model_max_length=args.ctx,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(args.out)

    torch.manual_seed(args.seed)
    cfg = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 2,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.ctx,
        bos_token_id=hf_tok.convert_tokens_to_ids("<s>"),
        eos_token_id=hf_tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=hf_tok.convert_tokens_to_ids("</s>"),
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(args.out)
    GenerationConfig(
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id,
        do_sample=False,
        max_new_tokens=16,
    ).save_pretrained(args.out)

    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"out": args.out, "vocab": cfg.vocab_size, "params": params,
                      "files": sorted(os.listdir(args.out))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
