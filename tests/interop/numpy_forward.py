"""An independent numpy forward pass for the architectures nibble's engine runs.

Written from the Hugging Face model definitions (modeling_llama, _mistral,
_mixtral, _qwen2, _qwen3, _qwen2_moe, _qwen3_moe, _gemma3), not from the
engine's C code: the GGUF tensors are first turned back into HF's layout
(llama-family q/k rows un-permuted, Gemma's stored "1 + w" norms back to w,
stacked experts split) and the graph is then computed the HF way (rotate_half
RoPE, eager attention with an explicit mask, float64 throughout).

Usage: logits = forward(GGUFReader(path), token_ids)  -> (n_tokens, n_vocab) float64
Only F32 (and F16/BF16 via gguf-py's dequantization) weights are expected.
"""
import numpy as np


def _meta(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


def _tensors(r):
    out = {}
    for t in r.tensors:
        a = np.asarray(t.data)
        if a.dtype not in (np.float32, np.float16):
            from gguf import quants
            a = quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(x) for x in reversed(list(t.shape)))  # numpy order: outermost first
        out[t.name] = a.astype(np.float64).reshape(shape)
    return out


def _unpermute(w, n_head):
    """Inverse of llama.cpp's converter `permute`: GGUF rows -> HF rows."""
    rows = w.shape[0]
    hd = rows // n_head
    # GGUF row h*hd + 2*i + j  <-  HF row h*hd + j*(hd/2) + i
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def _inv_freq(base, n_rot, rope):
    """HF's rope_init functions (default, linear, llama3, yarn) -> (inv_freq, attention_factor).
    rope: None or a dict like HF's config.rope_scaling with "rope_type"."""
    inv = 1.0 / base ** (np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    if not rope or rope["rope_type"] == "default":
        return inv, 1.0
    f = rope["factor"]
    if rope["rope_type"] == "linear":
        return inv / f, 1.0
    if rope["rope_type"] == "llama3":
        old = rope["original_max_position_embeddings"]
        lo, hi = rope["low_freq_factor"], rope["high_freq_factor"]
        wavelen = 2 * np.pi / inv
        smooth = (old / wavelen - lo) / (hi - lo)
        mid = (1 - smooth) * inv / f + smooth * inv
        out = np.where(wavelen > old / lo, inv / f, inv)
        return np.where((wavelen <= old / lo) & (wavelen >= old / hi), mid, out), 1.0
    if rope["rope_type"] == "yarn":
        old = rope["original_max_position_embeddings"]
        dim = n_rot

        def corr(rot):
            return dim * np.log(old / (rot * 2 * np.pi)) / (2 * np.log(base))
        low, high = max(np.floor(corr(32)), 0), min(np.ceil(corr(1)), dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2) - low) / (high - low), 0, 1)
        extra = 1 - ramp
        inv = (inv / f) * (1 - extra) + inv * extra
        return inv, 0.1 * np.log(f) + 1.0
    raise ValueError(rope["rope_type"])


def _rope(x, pos, base, n_rot, rope=None):
    """HF apply_rotary_pos_emb on the first n_rot dims; x: (T, heads, hd)."""
    inv, att = _inv_freq(base, n_rot, rope)
    ang = np.outer(pos.astype(np.float64), inv)  # (T, n_rot/2)
    emb = np.concatenate([ang, ang], axis=-1)[:, None, :]
    xr, xp = x[..., :n_rot], x[..., n_rot:]
    xr = xr * (np.cos(emb) * att) + _rotate_half(xr) * (np.sin(emb) * att)
    return np.concatenate([xr, xp], axis=-1)


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def forward(r, tokens, variant=None, rope=None, hidden=False):
    """rope: HF's rope_scaling dict for the global layers when the GGUF
    cannot say it (llama3 becomes a rope_freqs tensor in GGUF); without it,
    a GGUF rope.scaling.type of linear / yarn is read from the metadata.
    variant: None, or a deliberate mistake for the test's sensitivity
    checks: "no_window" (gemma3 attends globally everywhere), "flip_norm_topk"
    (MoE renormalisation the other way), "no_unpermute" (llama q/k rows used
    as stored in GGUF with HF's rotate_half), "causal" (an encoder attends
    causally).
    gemma-embedding (EmbeddingGemma, HF Gemma3TextModel with
    use_bidirectional_attention): every token attends to every other, local
    layers within |i - j| < sliding_window // 2 + 1 (transformers' adjusted
    window). hidden: return the final normed hidden states instead of logits."""
    arch = _meta(r, "general.architecture")
    g = lambda k, d=None: _meta(r, f"{arch}.{k}", d)
    W = _tensors(r)
    n_layer = g("block_count")
    E = g("embedding_length")
    H = g("attention.head_count")
    KVH = g("attention.head_count_kv", H)
    hd = g("attention.key_length", E // H)
    n_rot = g("rope.dimension_count", hd)
    eps = g("attention.layer_norm_rms_epsilon", 1e-5)
    theta = g("rope.freq_base", 10000.0)
    n_expert = g("expert_count", 0)
    n_used = g("expert_used_count", 0)
    encoder = arch == "gemma-embedding"
    gemma = arch in ("gemma3", "gemma-embedding")
    llama = arch == "llama"
    moe = n_expert > 0
    # HF config flags that GGUF leaves implicit
    norm_topk = arch in ("llama", "qwen3moe")  # mixtral always; qwen3_moe norm_topk_prob; qwen2_moe does not
    if variant == "flip_norm_topk":
        norm_topk = not norm_topk
    window = g("attention.sliding_window", 0) if gemma else 0
    theta_local = g("rope.freq_base_swa", 10000.0)
    if rope is None and g("rope.scaling.type") in ("linear", "yarn"):
        rope = {"rope_type": g("rope.scaling.type"), "factor": g("rope.scaling.factor"),
                "original_max_position_embeddings": g("rope.scaling.original_context_length",
                                                      g("context_length"))}
    if variant == "no_scaling":
        rope = None

    def norm_w(name):
        w = W[name]
        return (w - 1.0) if gemma else w  # HF Gemma3RMSNorm stores w, applies (1 + w)

    def rmsnorm(x, name):
        w = norm_w(name)
        return _rms(x, (1.0 + w) if gemma else w, eps)

    tok = np.asarray(tokens)
    T = len(tok)
    pos = np.arange(T)
    emb = W["token_embd.weight"]
    x = emb[tok].copy()
    if gemma:
        x = x * np.sqrt(E)
    lm_head = W.get("output.weight", emb)

    for L in range(n_layer):
        p = f"blk.{L}."
        wq, wk = W[p + "attn_q.weight"], W[p + "attn_k.weight"]
        if llama and variant != "no_unpermute":
            wq, wk = _unpermute(wq, H), _unpermute(wk, KVH)
        wv, wo = W[p + "attn_v.weight"], W[p + "attn_output.weight"]
        h = rmsnorm(x, p + "attn_norm.weight")
        q, k, v = h @ wq.T, h @ wk.T, h @ wv.T
        if p + "attn_q.bias" in W:
            q, k, v = q + W[p + "attn_q.bias"], k + W[p + "attn_k.bias"], v + W[p + "attn_v.bias"]
        q = q.reshape(T, H, hd)
        k = k.reshape(T, KVH, hd)
        v = v.reshape(T, KVH, hd)
        if p + "attn_q_norm.weight" in W:
            q = rmsnorm(q, p + "attn_q_norm.weight")
            k = rmsnorm(k, p + "attn_k_norm.weight")
        sliding = gemma and (L + 1) % 6 != 0  # Gemma 3: 5 local layers, then 1 global
        base = theta_local if sliding else theta
        q = _rope(q, pos, base, n_rot, None if sliding else rope)
        k = _rope(k, pos, base, n_rot, None if sliding else rope)
        rep = H // KVH  # repeat_kv
        k = np.repeat(k, rep, axis=1)
        v = np.repeat(v, rep, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) * hd ** -0.5
        i = pos[:, None]
        j = pos[None, :]
        if encoder and variant != "causal":
            allowed = np.ones((T, T), dtype=bool)
            if sliding and variant != "no_window":
                allowed &= np.abs(i - j) < window // 2 + 1
        else:
            allowed = j <= i
            if sliding and variant != "no_window":
                allowed &= j > i - window
        scores = np.where(allowed[None], scores, -np.inf)
        att = np.einsum("hts,shd->thd", _softmax(scores), v).reshape(T, H * hd)
        o = att @ wo.T
        if gemma:
            o = rmsnorm(o, p + "post_attention_norm.weight")
        x = x + o

        h = rmsnorm(x, p + "ffn_norm.weight")
        if moe and p + "ffn_gate_inp.weight" in W:
            logits = h @ W[p + "ffn_gate_inp.weight"].T  # (T, X)
            probs = _softmax(logits)
            out = np.zeros_like(h)
            for t in range(T):
                order = np.argsort(-probs[t], kind="stable")[:n_used]
                wts = probs[t, order]
                if norm_topk:
                    wts = wts / wts.sum()
                for e, wt in zip(order, wts):
                    gt = W[p + "ffn_gate_exps.weight"][e]
                    up = W[p + "ffn_up_exps.weight"][e]
                    dn = W[p + "ffn_down_exps.weight"][e]
                    out[t] += wt * (dn @ (_silu(gt @ h[t]) * (up @ h[t])))
            if p + "ffn_gate_inp_shexp.weight" in W:
                gate = 1.0 / (1.0 + np.exp(-(h @ W[p + "ffn_gate_inp_shexp.weight"].reshape(-1))))
                sh = (_silu(h @ W[p + "ffn_gate_shexp.weight"].T) * (h @ W[p + "ffn_up_shexp.weight"].T)) @ \
                    W[p + "ffn_down_shexp.weight"].T
                out = out + gate[:, None] * sh
            f = out
        else:
            act = _gelu_tanh if gemma else _silu
            f = (act(h @ W[p + "ffn_gate.weight"].T) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
        if gemma:
            f = rmsnorm(f, p + "post_ffw_norm.weight")
        x = x + f

    x = rmsnorm(x, "output_norm.weight")
    if hidden:
        return x
    return x @ lm_head.T


def embed(r, tokens, variant=None):
    """sentence-transformers' EmbeddingGemma pipeline on a gemma-embedding GGUF:
    Transformer -> Pooling (mean over all tokens) -> Dense (2_Dense, no bias,
    identity) -> Dense (3_Dense) -> Normalize. variant "no_dense" skips the
    Dense modules; the forward() variants apply to the transformer."""
    x = forward(r, tokens, variant=None if variant == "no_dense" else variant, hidden=True)
    p = x.mean(axis=0)
    W = _tensors(r)
    if "dense_2.weight" in W and variant != "no_dense":
        p = W["dense_3.weight"] @ (W["dense_2.weight"] @ p)
    return p / np.linalg.norm(p)
