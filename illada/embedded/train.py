"""Train the embedded default model from a seed with the masked diffusion objective.

    python -m illada.embedded.train --seed 0 --out illada/embedded/default

The model is a small iLLaDA-format Transformer (Llama-style config, safetensors, ``tokenizer.json`` with a
``<[MASK]>`` token that is absent from ``config.json``), so loading it exercises the real iLLaDA path.

Objective (LLaDA SFT): a row is prompt + answer + EOS padding to ``GEN_LENGTH``; draw t ~ U(eps, 1), mask each
response token with probability t (``--mask-prompt``: prompt tokens too, as iLLaDA's SFT does), and minimise
the cross-entropy on masked positions weighted by 1/t, averaged over response positions.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from illada.atomic import atomic_write_text
from illada.checkpoint import save_checkpoint
from illada.config import ModelConfig
from illada.tasks.arithmetic import ANSWER_WIDTH, problems, sample_problem
from illada.model import Transformer
from illada.tokenizer import Tokenizer, pad_left

SPECIALS = ["<pad>", "<s>", "</s>", "<|eot_id|>", "</think>", "<[MASK]>"]  # <[MASK]> is id 5, as in iLLaDA
PAD_ID, EOS_ID, MASK_ID = 0, 2, 5
GEN_LENGTH = 8  # the answer canvas: up to ANSWER_WIDTH digits, then EOS
DEFAULT_DIR = Path(__file__).parent / "default"


def build_tokenizer() -> Tokenizer:
    """Character-level tokenizer over printable ASCII, so real benchmark text also runs through the model."""
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    chars = [chr(c) for c in range(32, 127)]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars + ["<unk>"])}
    backend = HFTokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIALS)
    config = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "model_max_length": 1024}
    return Tokenizer(backend, config)


def model_config(vocab_size: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=384,
                       norm_eps=1e-5, rope_theta=10000.0, max_seq_len=1024, tie_embeddings=True, format="illada",
                       eos_token_id=EOS_ID, pad_token_id=PAD_ID, bos_token_id=1)


def encode_batch(tok: Tokenizer, batch: list, rng: random.Random | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids, attention mask and response mask of left-padded rows ``prompt + answer + EOS padding``.

    Without ``rng`` every answer is padded to ``GEN_LENGTH`` (the evaluation canvas). With it, half the rows get
    a random shorter padding (possibly none), so the model also sees the bare answers that multiple-choice
    scorers present.
    """
    rows, response_lens = [], []
    for p in batch:
        prompt, answer = tok.encode(p.prompt), tok.encode(p.answer)
        pad = GEN_LENGTH - len(answer)
        if rng is not None and rng.random() < 0.5:
            pad = rng.randint(0, pad)
        rows.append(prompt + answer + [EOS_ID] * pad)
        response_lens.append(len(answer) + pad)
    ids, attn = pad_left(rows, PAD_ID)
    width = ids.shape[1]
    response = torch.arange(width)[None, :] >= width - torch.tensor(response_lens)[:, None]
    return ids, attn, response


def diffusion_loss(model: Transformer, ids: torch.Tensor, attn: torch.Tensor, maskable: torch.Tensor,
                   gen: torch.Generator, eps: float = 1e-3) -> torch.Tensor:
    """Masked diffusion loss: CE on masked positions weighted 1/t, normalised by the maskable count."""
    B = ids.shape[0]
    t = eps + (1 - eps) * torch.rand(B, 1, generator=gen)
    masked = (torch.rand(ids.shape, generator=gen) < t) & maskable
    noisy = torch.where(masked, torch.full_like(ids, MASK_ID), ids)
    logits = model(noisy, attn)
    ce = F.cross_entropy(logits.float().transpose(1, 2), ids, reduction="none")
    return ((ce / t) * masked).sum() / maskable.sum()


def train(seed: int, out: Path, steps: int, batch_size: int, lr: float, mask_prompt: bool, log_every: int,
          save_every: int = 0) -> dict:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    tok = build_tokenizer()
    cfg = model_config(tok.vocab_size)
    model = Transformer.random(cfg, seed=seed, std=0.02)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    held_out = problems("test", 512, seed=seed)
    held_ids, held_attn, held_resp = encode_batch(tok, held_out)

    warmup = min(100, steps // 10 + 1)
    start = time.perf_counter()
    history = []
    for step in range(1, steps + 1):
        elapsed = time.perf_counter() - start
        progress = step / steps
        for group in opt.param_groups:  # linear warm-up, then cosine to 10%
            group["lr"] = lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        batch = []
        while len(batch) < batch_size:
            p = sample_problem(rng)
            if not p.held_out:
                batch.append(p)
        ids, attn, resp = encode_batch(tok, batch, rng)
        maskable = (attn.bool() if mask_prompt else resp)
        loss = diffusion_loss(model, ids, attn, maskable, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0:
            with torch.no_grad():
                val = diffusion_loss(model, held_ids, held_attn, held_resp, torch.Generator().manual_seed(0)).item()
            history.append({"step": step, "seconds": round(elapsed, 1), "train_loss": round(loss.item(), 4),
                            "heldout_loss": round(val, 4)})
            print(json.dumps(history[-1]), flush=True)
        if save_every and step % save_every == 0 and step < steps:
            save(model, tok, out, {"seed": seed, "steps": step, "partial": True, "history": history})

    model.eval()
    info = {"seed": seed, "steps": steps, "train_seconds": round(time.perf_counter() - start, 1),
            "batch_size": batch_size, "lr": lr, "mask_prompt": mask_prompt, "gen_length": GEN_LENGTH,
            "params": cfg.num_parameters, "history": history}
    save(model, tok, out, info)
    return info


def save(model: Transformer, tok: Tokenizer, out: Path, info: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out)
    tok.backend.save(str(out / "tokenizer.json"))
    atomic_write_text(out / "tokenizer_config.json", json.dumps(tok.config, indent=2))
    atomic_write_text(out / "training.json", json.dumps(info, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--mask-prompt", action="store_true", help="iLLaDA-style SFT: mask prompt and response alike")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--save-every", type=int, default=0, help="also save a checkpoint every N steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = train(args.seed, args.out, args.steps, args.batch_size, args.lr, args.mask_prompt, args.log_every,
                 args.save_every)
    print(f"trained {info['steps']} steps in {info['train_seconds']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
