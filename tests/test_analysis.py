import torch
import torch.nn.functional as F

from loopmdm_core.analysis import attention_probs, masked_attention_share
from loopmdm_core.model import LoopMDM, ModelConfig, apply_rope

CFG = ModelConfig(n_layers=3, d_model=32, n_heads=4, loop_start=1, loop_end=2, n_loops=3, vocab_size=64)


def test_probabilities_are_the_models_attention_and_sum_to_one():
    torch.manual_seed(0)
    model = LoopMDM(CFG).eval()
    x = torch.randint(0, 60, (2, 10))
    layers = list(attention_probs(model, x))
    assert [(i, it) for i, it, _ in layers] == [(0, None), (1, 1), (1, 2), (1, 3), (2, None)]
    for _, _, p in layers:
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
    # The first layer's probabilities times v give what SDPA gives the model.
    layer, cos, sin = model.layers[0], *model.rope(10, "cpu")
    q, k, v = layer.attn.wqkv(layer.attn_norm(model.embed(x))).view(2, 10, 3, 4, 8).unbind(2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    sdpa = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    torch.testing.assert_close(layers[0][2] @ v.transpose(1, 2), sdpa, rtol=1e-4, atol=1e-5)


def test_masked_share_per_layer_and_loop():
    torch.manual_seed(0)
    model = LoopMDM(CFG).eval()
    x = torch.randint(0, 60, (4, 16))
    rows = masked_attention_share(model, x, t=0.5, mask_id=63, seed=1)
    assert [r["loop_iteration"] for r in rows] == [None, 1, 2, 3, None]
    assert all(0 <= r["mask_to_mask_share"] <= 1 for r in rows)
    assert rows[0]["masked_key_fraction"] == rows[-1]["masked_key_fraction"]
    more = masked_attention_share(model, x, t=0.5, mask_id=63, seed=1, n_loops=5)
    assert [r["loop_iteration"] for r in more][1:6] == [1, 2, 3, 4, 5]
