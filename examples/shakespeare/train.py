"""Train the character-level GPT on tiny Shakespeare with PyTorch and save its weights for tensorforge.

    python examples/shakespeare/train.py [--minutes 6] [--out examples/shakespeare/weights/gpt_char.npz]

PyTorch (the `torch` extra) trains `TorchGPT`, the same network as tensorforge.nn.GPT (pre-LN blocks,
tanh GELU, LayerNorm eps 1e-5, causal attention, untied lm_head without bias), on one thread
(the machine is shared): AdamW, batches of 32 windows of 128 characters, linear warm-up then cosine
decay, stopping after `--minutes`. `export_state` renames and transposes its weights into
tensorforge's state dict (Linear weights [in, out], LayerNorm gamma/beta); the file is written with
Module.save (float32 .npz, no pickle). Prints the training and validation loss (nats per character).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import MODEL, VOCAB, build_model, encode, load_text, split  # noqa: E402

WEIGHTS = Path(__file__).resolve().parent / "weights" / "gpt_char.npz"
BATCH = 32


def torch_gpt(vocab_size: int, embed_dim: int, num_layers: int, num_heads: int, max_seq_len: int):
    """A torch.nn.Module computing tensorforge.nn.GPT's function (torch imported here: an optional extra)."""
    import torch
    from torch import nn as tnn
    from torch.nn import functional as F

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = tnn.LayerNorm(embed_dim), tnn.LayerNorm(embed_dim)
            self.q_proj, self.k_proj, self.v_proj, self.out_proj = (tnn.Linear(embed_dim, embed_dim) for _ in range(4))
            self.linear1, self.linear2 = tnn.Linear(embed_dim, 4 * embed_dim), tnn.Linear(4 * embed_dim, embed_dim)

        def forward(self, x):
            batch, seq, _ = x.shape
            h = self.ln1(x)
            q, k, v = (projection(h).view(batch, seq, num_heads, -1).transpose(1, 2)
                       for projection in (self.q_proj, self.k_proj, self.v_proj))
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.out_proj(attended.transpose(1, 2).reshape(batch, seq, embed_dim))
            return x + self.linear2(F.gelu(self.linear1(self.ln2(x)), approximate="tanh"))

    class TorchGPT(tnn.Module):
        def __init__(self):
            super().__init__()
            self.token_embedding = tnn.Embedding(vocab_size, embed_dim)
            self.position_embedding = tnn.Embedding(max_seq_len, embed_dim)
            self.blocks = tnn.ModuleList(Block() for _ in range(num_layers))
            self.ln_f = tnn.LayerNorm(embed_dim)
            self.lm_head = tnn.Linear(embed_dim, vocab_size, bias=False)
            for module in self.modules():  # GPT-2's initialization
                if isinstance(module, (tnn.Linear, tnn.Embedding)):
                    tnn.init.normal_(module.weight, std=0.02)
                if isinstance(module, tnn.Linear) and module.bias is not None:
                    tnn.init.zeros_(module.bias)

        def forward(self, tokens):
            x = self.token_embedding(tokens) + self.position_embedding(torch.arange(tokens.shape[1]))
            for block in self.blocks:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    return TorchGPT()


def export_state(net) -> dict[str, np.ndarray]:
    """TorchGPT's weights under tensorforge.nn.GPT's names, Linear weights transposed to [in, out]."""
    renamed = {"ln1.weight": "ln1.gamma", "ln1.bias": "ln1.beta", "ln2.weight": "ln2.gamma", "ln2.bias": "ln2.beta",
               "ln_f.weight": "ln_f.gamma", "ln_f.bias": "ln_f.beta"}
    state = {}
    for name, tensor in net.state_dict().items():
        array = tensor.detach().cpu().numpy().astype(np.float32)
        for torch_name, ours in renamed.items():
            name = name.replace(torch_name, ours)
        for layer in ("q_proj", "k_proj", "v_proj", "out_proj"):
            name = name.replace(f".{layer}.", f".attention.{layer}.")
        name = name.replace(".linear1.", ".mlp.linear1.").replace(".linear2.", ".mlp.linear2.")
        is_linear = name.endswith(".weight") and "embedding" not in name
        state[name] = np.ascontiguousarray(array.T) if is_linear else array
    return state


def batches(ids: np.ndarray, context: int, generator):
    """Endless random (inputs, targets) windows of the text, targets shifted by one character."""
    import torch

    data = torch.from_numpy(ids)
    while True:
        starts = torch.randint(len(data) - context - 1, (BATCH,), generator=generator)
        windows = torch.stack([data[start:start + context + 1] for start in starts.tolist()])
        yield windows[:, :-1], windows[:, 1:]


def evaluate(net, ids: np.ndarray, context: int, windows: int = 64) -> float:
    """Mean cross-entropy over `windows` fixed windows of `ids` (nats per character)."""
    import torch

    generator = torch.Generator().manual_seed(1)
    losses = []
    with torch.no_grad():
        for _ in range(windows // BATCH):
            inputs, targets = next(batches(ids, context, generator))
            logits = net(inputs)
            losses.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).item())
    return float(np.mean(losses))


def train(minutes: float, learning_rate: float = 3e-3, verbose: bool = True):
    """(net, train loss, validation loss, steps, seconds) after `minutes` of training on one thread."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    train_ids, validation_ids = split(encode(load_text()))
    context = MODEL["max_seq_len"]
    net = torch_gpt(len(VOCAB), **MODEL).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=0.01, betas=(0.9, 0.99))
    stream = batches(train_ids, context, torch.Generator().manual_seed(0))
    budget, warmup, start = minutes * 60, 100, time.perf_counter()
    step, smoothed = 0, None
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            break
        progress = min(elapsed / budget, 1.0)
        scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * scale
        inputs, targets = next(stream)
        loss = torch.nn.functional.cross_entropy(net(inputs).flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        smoothed = loss.item() if smoothed is None else 0.95 * smoothed + 0.05 * loss.item()
        step += 1
        if verbose and step % 100 == 0:
            print(f"step {step:5d}  {elapsed:6.0f} s  loss {smoothed:.3f}", flush=True)
    seconds = time.perf_counter() - start
    net.eval()
    return net, evaluate(net, train_ids, context), evaluate(net, validation_ids, context), step, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    net, train_loss, validation_loss, steps, seconds = train(args.minutes, args.learning_rate)
    model = build_model()
    model.load_state_dict(export_state(net))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"{steps} steps in {seconds:.0f} s on 1 thread: train loss {train_loss:.3f}, validation loss "
          f"{validation_loss:.3f} (nats per character); weights {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
