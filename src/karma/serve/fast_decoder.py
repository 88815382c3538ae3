"""A serving-only pass of a Llama-family decoder that computes just what the readout needs.

`KarmaEncoder.hidden_states` runs the whole decoder over every position, as training must. Serving
reads one hidden state per user (the readout position), and every sequence starts with the same
instruction tokens. `PrefixCachedDecoder` does the same maths with less work:

- the instruction prefix's keys and values are computed once per layer (causal attention: they do
  not depend on what follows) and reused for every request: only the user's own positions run;
- the last layer runs its queries, attention output, MLP and final norm at the readout position
  only (the other positions' last-layer outputs are never read);
- q/k/v and gate/up projections are fused into one matrix product each; on CPUs with oneDNN the
  fp32 weights are also reordered once into oneDNN's blocked layout (`PackedLinear`): the products
  are the same fp32 sums (summed in another order), ~30 % faster for the small row counts of one
  request than the default sgemm path, which re-packs the weight on every call.

Same weights, same operations, so the interest embedding equals the full pass up to float
rounding (`tests/serve/test_fast_decoder.py` checks it on a random Llama). Used for decoders whose
layers are transformers' `LlamaDecoderLayer` (SmolLM2, the tiny test model); anything else keeps
the full pass (`PrefixCachedDecoder.supports`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from karma.model.sequence import SequenceLayout

ROPE_TABLE = 1024  # positions whose cos/sin are precomputed; longer rows extend the table


class PrefixCachedDecoder:
    """Readout hidden states (B, d) of a `KarmaEncoder`'s decoder; see the module docstring."""

    def __init__(self, encoder: nn.Module) -> None:
        # A plain object, not a submodule: the encoder's state dict must not list its weights twice.
        self.encoder = encoder
        decoder = encoder.backbone.get_decoder()
        self.decoder = decoder
        self.layers = list(decoder.layers[: decoder.config.num_hidden_layers])
        attn = self.layers[0].self_attn
        self.head_dim = int(attn.head_dim)
        self.num_heads = int(attn.q_proj.out_features) // self.head_dim
        self.num_kv_heads = int(attn.k_proj.out_features) // self.head_dim
        self.scaling = float(attn.scaling)
        self.act = self.layers[0].mlp.act_fn
        self.qkv = [
            _fuse(y.self_attn.q_proj, y.self_attn.k_proj, y.self_attn.v_proj) for y in self.layers
        ]
        self.gate_up = [_fuse(y.mlp.gate_proj, y.mlp.up_proj) for y in self.layers]
        self.o_proj: list[nn.Module] = [y.self_attn.o_proj for y in self.layers]
        self.down_proj: list[nn.Module] = [y.mlp.down_proj for y in self.layers]
        # The last layer needs queries at the readout position only, keys/values everywhere.
        last = self.layers[-1].self_attn
        self.last_q: nn.Module = last.q_proj
        self.last_kv: nn.Module = _fuse(last.k_proj, last.v_proj)
        self._pack()
        self.quantized = False
        self.prefix_len = len(encoder.instruction_ids)
        self._rope(max(ROPE_TABLE, 2 * self.prefix_len))
        self.prefix_kv = self._prefix_kv()

    def _pack(self) -> None:
        """Wrap every fp32 linear of the pass in a `PackedLinear` when oneDNN can run it."""
        for name in ("qkv", "gate_up", "o_proj", "down_proj"):
            setattr(self, name, [PackedLinear.wrap(m) for m in getattr(self, name)])
        self.last_q, self.last_kv = PackedLinear.wrap(self.last_q), PackedLinear.wrap(self.last_kv)

    @staticmethod
    def supports(encoder: nn.Module) -> bool:
        """True when the decoder is a plain Llama stack (the layout this pass reimplements)."""
        try:
            from transformers.models.llama.modeling_llama import LlamaDecoderLayer
        except ImportError:  # pragma: no cover - transformers without Llama
            return False
        decoder = encoder.backbone.get_decoder()
        layers = getattr(decoder, "layers", None)
        return (
            layers is not None
            and len(layers) > 0
            and all(type(layer) is LlamaDecoderLayer for layer in layers)
            and hasattr(decoder, "rotary_emb")
            and getattr(layers[0].mlp, "gate_proj", None) is not None
        )

    # --- setup ------------------------------------------------------------------------------

    @torch.inference_mode()
    def _rope(self, length: int) -> None:
        table = self.encoder.backbone.get_input_embeddings().weight
        positions = torch.arange(length, device=table.device)[None]  # (1, P)
        cos, sin = self.decoder.rotary_emb(table[:1][None].float(), positions)  # (1, P, hd)
        self.cos, self.sin = cos[0].to(table.dtype), sin[0].to(table.dtype)  # (P, hd)

    @torch.inference_mode()
    def _prefix_kv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (1, kv_heads, p, hd) keys (rotated) and values of the instruction prefix."""
        p = self.prefix_len
        table = self.encoder.backbone.get_input_embeddings()
        if p == 0:
            empty = torch.zeros(1, self.num_kv_heads, 0, self.head_dim, dtype=table.weight.dtype)
            return [(empty, empty) for _ in self.layers]
        ids = torch.tensor([self.encoder.instruction_ids], device=table.weight.device)
        x = table(ids).float().to(table.weight.dtype)  # (1, p, d): as `inputs_embeds` builds it
        out = []
        for i, layer in enumerate(self.layers):
            k, v, x = self._layer(i, layer, x, 0, None, None, full=True)
            out.append((k, v))
        return out

    # --- the pass ---------------------------------------------------------------------------

    def _split_heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        return x.view(*x.shape[:2], heads, self.head_dim).transpose(1, 2)  # (B, h, S, hd)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _layer(
        self,
        i: int,
        layer: nn.Module,
        x: torch.Tensor,
        start: int,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        readout: torch.Tensor | None,
        full: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder layer over positions start..start+S-1 of x (B, S, d), after `past` keys.

        full: every position's output (B, S, d); else only the rows' `readout` offsets (B, 1, d).
        Returns (all keys, all values, output) with keys/values including `past`.
        """
        b, s, _ = x.shape
        h = layer.input_layernorm(x)
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        if full:
            qkv = self.qkv[i](h)  # (B, S, q + 2 kv)
            q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
        else:  # queries at the readout rows only (below), keys and values at every position
            assert readout is not None
            q = h  # projected once the readout rows are picked
            k, v = self.last_kv(h).split([kv_size, kv_size], dim=-1)
        cos, sin = self.cos[start : start + s], self.sin[start : start + s]  # (S, hd)
        k = self._rotate(self._split_heads(k, self.num_kv_heads), cos, sin)
        v = self._split_heads(v, self.num_kv_heads)
        if past is not None:
            k = torch.cat([past[0].expand(b, -1, -1, -1), k], dim=2)  # (B, kvh, p + S, hd)
            v = torch.cat([past[1].expand(b, -1, -1, -1), v], dim=2)
        offset = k.shape[2] - s  # positions before this chunk
        if full:
            q = self._rotate(self._split_heads(q, self.num_heads), cos, sin)  # (B, h, S, hd)
            keys = torch.arange(k.shape[2], device=x.device)
            mask = keys[None, :] <= (torch.arange(s, device=x.device) + offset)[:, None]  # (S, p+S)
            residual = x
        else:
            assert readout is not None
            rows = torch.arange(b, device=x.device)
            q = self.last_q(q[rows, readout][:, None])  # (B, 1, q)
            q = self._rotate(
                self._split_heads(q, self.num_heads),
                cos[readout][:, None, None],
                sin[readout][:, None, None],
            )  # (B, h, 1, hd)
            keys = torch.arange(k.shape[2], device=x.device)
            mask = (keys[None, :] <= (readout + offset)[:, None])[:, None, None]  # (B, 1, 1, p+S)
            residual = x[rows, readout][:, None]  # (B, 1, d)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            scale=self.scaling,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )  # (B, h, S', hd)
        out = self.o_proj[i](out.transpose(1, 2).reshape(b, out.shape[2], -1))
        x = residual + out
        gate, up = self.gate_up[i](layer.post_attention_layernorm(x)).chunk(2, dim=-1)
        x = x + self.down_proj[i](self.act(gate) * up)
        return k, v, x

    def quantize_int8(self) -> None:
        """Opt-in: int8 dynamic quantization of the user positions' linear layers (`--quantize`).

        Weights int8 per output channel, activations quantized per call (torch's dynamic
        quantization, fbgemm on x86): ~2x faster on CPU, but no longer the exact fp32 embedding
        (benchmarks/serve_int8_agreement.py measures how far). The cached prefix keys/values, the
        norms, attention and the heads stay fp32. The backbone's own modules are not changed.
        """
        import warnings

        from torch.ao.quantization import quantize_dynamic

        def q(module: nn.Module) -> nn.Module:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
                return quantize_dynamic(nn.Sequential(module), {nn.Linear}, dtype=torch.qint8)

        self.qkv = [q(_linear(m)) for m in self.qkv]
        self.gate_up = [q(_linear(m)) for m in self.gate_up]
        self.o_proj = [q(_linear(m)) for m in self.o_proj]
        self.down_proj = [q(_linear(m)) for m in self.down_proj]
        self.last_q, self.last_kv = q(_linear(self.last_q)), q(_linear(self.last_kv))
        self.quantized = True

    @torch.inference_mode()
    def readout_hidden(self, layout: SequenceLayout) -> torch.Tensor:
        """(B, d) float32 final-norm hidden states at `layout.readout_positions`."""
        p = self.prefix_len
        x = self.encoder.inputs_embeds(layout)[:, p:]  # (B, S, d) the rows' own positions
        length = x.shape[1] + p
        if length > self.cos.shape[0]:
            self._rope(2 * length)
        readout = layout.readout_positions.to(x.device) - p  # (B,) offsets into x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            _, _, x = self._layer(
                i, layer, x, p, self.prefix_kv[i], readout if i == last else None, full=i < last
            )
        return self.decoder.norm(x[:, 0]).float()  # (B, d)


class PackedLinear(nn.Module):
    """An fp32 `nn.Linear` whose weight is reordered once into oneDNN's blocked layout.

    `torch.nn.functional.linear` on CPU hands the (out, in) weight to sgemm, which packs it into its
    own blocks on every call; for a request's few rows that packing is a large share of the work.
    Here the weight is packed once, at load (`torch.ops.mkldnn._reorder_linear_weight`, what
    inductor's weight freezing uses), and each call runs oneDNN's inner product on it. Same fp32
    products and sums, in another order: results agree with `F.linear` to float rounding.
    """

    ROWS_HINT = 32  # oneDNN picks its blocking for about this many input rows; any count works

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear  # kept: int8 quantization and fallbacks start from the plain layer
        weight = linear.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, self.ROWS_HINT)
        self.bias = None if linear.bias is None else linear.bias.detach()

    @staticmethod
    def available(linear: nn.Module) -> bool:
        return (
            isinstance(linear, nn.Linear)
            and linear.weight.dtype == torch.float32
            and linear.weight.device.type == "cpu"
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        )

    @classmethod
    def wrap(cls, linear: nn.Module) -> nn.Module:
        """`PackedLinear(linear)` where oneDNN can run it, else `linear` unchanged."""
        if not cls.available(linear):
            return linear
        try:
            return cls(linear)  # type: ignore[arg-type]
        except RuntimeError:  # a build whose oneDNN cannot pack this weight: keep the plain path
            return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def _linear(module: nn.Module) -> nn.Module:
    """The plain `nn.Linear` behind a `PackedLinear` (or the module itself)."""
    return module.linear if isinstance(module, PackedLinear) else module


def _fuse(*linears: nn.Linear) -> nn.Linear:
    """One Linear computing the concatenated outputs of `linears` (same input)."""
    first = linears[0]
    fused = nn.Linear(
        first.in_features,
        sum(lin.out_features for lin in linears),
        bias=first.bias is not None,
        device=first.weight.device,
        dtype=first.weight.dtype,
    )
    with torch.no_grad():
        fused.weight.copy_(torch.cat([lin.weight for lin in linears]))
        if first.bias is not None:
            fused.bias.copy_(torch.cat([lin.bias for lin in linears]))
    fused.requires_grad_(False)
    return fused
