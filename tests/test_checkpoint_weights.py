"""The checkpoint reader used by grading must give exactly the weights the loaded bridge uses.

The truth here is the bridge itself: TransformerLens's own W_Q... properties of the model
built by load_model, and the model's forward pass (q from hook_q)."""
import pytest
import torch

from mechinterp_edu.models import CheckpointError, load_model
from mechinterp_edu.models.checkpoint_weights import attn_only_weights
from mechinterp_edu.weights import layer_weights


@pytest.mark.parametrize("name", ["skip_trigrams", "max_of_4"])
def test_checkpoint_weights_equal_bridge_weights(name):
    from_file = attn_only_weights(name, dtype=torch.float64)
    model = load_model(name, device="cpu", dtype=torch.float64)
    from_bridge = layer_weights(model, 0, dtype=torch.float64, device="cpu")
    for key, value in from_bridge.items():
        assert from_file[key].shape == value.shape, key
        torch.testing.assert_close(from_file[key], value, rtol=0, atol=0, msg=key)


def test_checkpoint_weights_reproduce_hook_q():
    w = attn_only_weights("skip_trigrams", dtype=torch.float64)
    model = load_model("skip_trigrams", device="cpu", dtype=torch.float64)
    tokens = torch.tensor([[0, 19, 3, 31, 35, 7]])
    _, cache = model.run_with_cache(tokens)
    resid = w["W_E"][tokens[0]] + w["W_pos"][: tokens.shape[1]]
    q = torch.einsum("pd,hde->phe", resid, w["W_Q"]) + w["b_Q"]
    torch.testing.assert_close(q, cache["blocks.0.attn.hook_q"][0], rtol=1e-12, atol=1e-12)


def test_unreadable_checkpoint_names_the_fix(tmp_path):
    bad = tmp_path / "broken.pt"
    torch.save({"format": "mechinterp-edu/1", "name": "skip_trigrams", "config": {"n_heads": 4, "d_head": 16},
                "state_dict": {"embed.weight": torch.zeros(3, 4)}, "metrics": {}, "recipe": {}}, bad)
    with pytest.raises(CheckpointError, match="python -m mechinterp_edu train skip_trigrams"):
        attn_only_weights("skip_trigrams", path=bad)
