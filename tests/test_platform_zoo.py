"""Model zoo: shipped checkpoints load as TransformerBridges; broken ones give clear errors."""
from __future__ import annotations

import pytest
import torch

from mechinterp_edu.models import zoo
from mechinterp_edu.models.zoo import (
    CHECKPOINT_DIR,
    model_names,
    CheckpointError,
    UnknownModelError,
    get_spec,
    load_model,
)

MODEL_NAMES = sorted(model_names())
FIVE_MB = 5 * 1024 * 1024


def _assert_names_file_and_fix(message: str, path, name: str) -> None:
    assert str(path) in message, f"the message should name the file {path}: {message}"
    assert f"python -m mechinterp_edu train {name}" in message, \
        f"the message should give the rebuild command: {message}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_missing_checkpoint_names_file_and_command(tmp_path, name):
    path = tmp_path / f"{name}.pt"
    with pytest.raises(CheckpointError) as info:
        load_model(name, device="cpu", path=path)
    _assert_names_file_and_fix(str(info.value), path, name)
    assert "missing" in str(info.value).lower()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_garbage_checkpoint_names_file_and_command(tmp_path, name):
    path = tmp_path / f"{name}.pt"
    path.write_bytes(b"this is not a torch file\x00\x01\x02" * 50)
    with pytest.raises(CheckpointError) as info:
        load_model(name, device="cpu", path=path)
    _assert_names_file_and_fix(str(info.value), path, name)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_truncated_checkpoint_names_file_and_command(tmp_path, name):
    shipped = get_spec(name).checkpoint_path
    data = shipped.read_bytes()
    path = tmp_path / f"{name}.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_model(name, device="cpu", path=path)
    _assert_names_file_and_fix(str(info.value), path, name)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_wrong_format_checkpoint_names_file_and_command(tmp_path, name):
    path = tmp_path / f"{name}.pt"
    torch.save({"weights": torch.zeros(3)}, path)  # a valid torch file, not our format
    with pytest.raises(CheckpointError) as info:
        load_model(name, device="cpu", path=path)
    _assert_names_file_and_fix(str(info.value), path, name)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_checkpoint_that_does_not_fit_the_model(tmp_path, name):
    payload = torch.load(get_spec(name).checkpoint_path, map_location="cpu", weights_only=True)
    state = dict(payload["state_dict"])
    state.pop(sorted(state)[0])
    state["unexpected.weight"] = torch.zeros(2, 2)
    payload["state_dict"] = state
    path = tmp_path / f"{name}.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as info:
        load_model(name, device="cpu", path=path)
    _assert_names_file_and_fix(str(info.value), path, name)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UnknownModelError) as info:
        load_model("no_such_model")
    for name in MODEL_NAMES:
        assert name in str(info.value)


def test_every_registered_model_has_a_shipped_checkpoint():
    missing = [get_spec(n).checkpoint_path.name for n in MODEL_NAMES
               if not get_spec(n).checkpoint_path.exists()]
    assert not missing, f"missing checkpoints: {missing}"


def test_every_shipped_checkpoint_is_at_most_5_mb():
    files = sorted(CHECKPOINT_DIR.glob("*.pt"))
    assert files, f"no checkpoints shipped in {CHECKPOINT_DIR}"
    too_big = {f.name: f.stat().st_size for f in files if f.stat().st_size > FIVE_MB}
    assert not too_big, f"checkpoints over 5 MB: {too_big}"
    assert zoo.MAX_CHECKPOINT_BYTES <= FIVE_MB


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shipped_checkpoint_is_in_the_documented_format(name):
    payload = torch.load(get_spec(name).checkpoint_path, map_location="cpu", weights_only=True)
    assert payload["format"] == "mechinterp-edu/1"
    assert payload["name"] == name
    assert payload["state_dict"] and all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    assert get_spec(name).headline_metric in payload["metrics"]
    assert isinstance(payload["recipe"], dict) and payload["recipe"], "the exact recipe must be stored"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_registered_model_loads_as_a_bridge(name):
    from transformer_lens.model_bridge import TransformerBridge

    model = load_model(name, device="cpu")
    assert isinstance(model, TransformerBridge)
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert model.zoo_name == name
    n = min(model.cfg.n_ctx, 8)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, n), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(tokens)
    assert logits.shape == (2, n, model.cfg.d_vocab_out if model.cfg.d_vocab_out > 0 else model.cfg.d_vocab)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_loading_in_float64(name):
    model = load_model(name, device="cpu", dtype=torch.float64)
    assert next(model.parameters()).dtype == torch.float64
