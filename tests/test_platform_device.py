"""The one place that picks the device: mechinterp_edu.device.get_device."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mechinterp_edu import device as device_mod
from mechinterp_edu.course import ROOT
from mechinterp_edu.device import ENV_VAR, DeviceError, describe_device, get_device


def test_env_var_name_is_the_documented_one():
    assert ENV_VAR == "MECHINTERP_EDU_DEVICE"


def test_cpu_override(monkeypatch):
    monkeypatch.setenv("MECHINTERP_EDU_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")


def test_override_wins_over_an_available_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("MECHINTERP_EDU_DEVICE", "cpu")
    assert get_device().type == "cpu"


def test_auto_picks_cuda_when_available(monkeypatch):
    monkeypatch.delenv("MECHINTERP_EDU_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device().type == "cuda"


def test_auto_picks_cpu_without_gpu(monkeypatch):
    monkeypatch.delenv("MECHINTERP_EDU_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")


def test_blank_override_means_auto(monkeypatch):
    monkeypatch.setenv("MECHINTERP_EDU_DEVICE", "  ")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")


@pytest.mark.parametrize("requested", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_gpu_is_a_clear_error(monkeypatch, requested):
    monkeypatch.setenv("MECHINTERP_EDU_DEVICE", requested)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError) as info:
        get_device()
    message = str(info.value)
    assert "MECHINTERP_EDU_DEVICE" in message and requested in message
    assert "cpu" in message  # says what to do instead


def test_nonsense_device_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MECHINTERP_EDU_DEVICE", "banana")
    with pytest.raises(DeviceError, match="MECHINTERP_EDU_DEVICE"):
        get_device()


def test_device_error_is_caught_by_the_cli_as_one_line():
    # The CLI turns RuntimeError subclasses into "error: ..." without a traceback.
    assert issubclass(DeviceError, RuntimeError)


def test_describe_says_where_the_choice_came_from(monkeypatch):
    monkeypatch.setenv("MECHINTERP_EDU_DEVICE", "cpu")
    assert "MECHINTERP_EDU_DEVICE" in describe_device()
    monkeypatch.delenv("MECHINTERP_EDU_DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    text = describe_device()
    assert text.startswith("cpu") and "auto" in text


def test_no_other_module_picks_a_device_itself():
    """'cuda if available else cpu' lives in device.py only; everything else calls get_device()."""
    pattern = re.compile(r"""["']cuda["']\s+if\s+torch\.cuda\.is_available\(\)|"""
                         r"""is_available\(\)\s+else\s+["']cpu["']""")
    offenders = []
    files = list((ROOT / "mechinterp_edu").rglob("*.py")) + [ROOT / "app.py"]
    for path in files:
        if not path.exists() or path.resolve() == Path(device_mod.__file__).resolve():
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, "use mechinterp_edu.device.get_device() instead:\n" + "\n".join(offenders)


# --------------------------------------------------------------------------- with a GPU
@pytest.mark.cuda
def test_cuda_override_with_gpu(monkeypatch):
    monkeypatch.setenv("MECHINTERP_EDU_DEVICE", "cuda")
    assert get_device().type == "cuda"


@pytest.mark.cuda
def test_cpu_and_cuda_agree_on_a_reference_forward_pass(cuda_device):
    """The same toy model and tokens give the same logits on CPU and CUDA, within tolerance."""
    from mechinterp_edu.models import list_models, load_model

    for spec in list_models():
        cpu_model = load_model(spec.name, device="cpu")
        gpu_model = load_model(spec.name, device=cuda_device)
        d_vocab = cpu_model.cfg.d_vocab
        n_ctx = min(cpu_model.cfg.n_ctx, 12)
        tokens = torch.randint(0, d_vocab, (4, n_ctx), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = cpu_model(tokens)
            got = gpu_model(tokens.to(cuda_device)).cpu()
        assert got.shape == expected.shape
        scale = expected.abs().max().item()
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4 * max(scale, 1.0),
                                   msg=lambda m: f"{spec.name}: CPU and CUDA logits differ: {m}")


@pytest.mark.cuda
def test_cpu_and_cuda_agree_on_attention_scores(cuda_device):
    """A float32 einsum of the kind the reference code uses agrees across devices."""
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(8, 4, 16, 32, generator=gen)   # [batch, heads, pos, d_head]
    k = torch.randn(8, 4, 16, 32, generator=gen)
    cpu = torch.einsum("bhqd,bhkd->bhqk", q, k) / 32 ** 0.5
    gpu = (torch.einsum("bhqd,bhkd->bhqk", q.to(cuda_device), k.to(cuda_device)) / 32 ** 0.5).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)


def test_cuda_marker_skips_cleanly_without_gpu(pytester):
    """A @pytest.mark.cuda test is reported as skipped (with a reason), never as an error."""
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nmarkers =\n    cuda: needs a CUDA GPU\n")
    pytester.makepyfile(
        """
        import pytest, torch

        @pytest.mark.cuda
        def test_needs_gpu():
            assert torch.zeros(1, device="cuda").item() == 0

        def test_uses_fixture(cuda_device):
            assert cuda_device.type == "cuda"
        """
    )
    import torch as _torch
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-rs", "-p", "no:cacheprovider")
    if _torch.cuda.is_available():
        result.assert_outcomes(passed=2)
    else:
        result.assert_outcomes(skipped=2)
        result.stdout.fnmatch_lines(["*needs a CUDA GPU*"])


def _ioi_decomposition_on(device):
    """Lesson 5's batched decomposition of the toy's last-layer head 0, computed on ``device``:
    (every part moved to the CPU, the largest |sum - real score| on that device)."""
    from mechinterp_edu.lessons.ioi_scores.model import load
    from mechinterp_edu.lessons.ioi_scores import reference as ref
    from mechinterp_edu.lessons.ioi_scores.data import WordVocab, build_vocab, encode_prompts, sample_prompts

    model = load(device=device)
    batch = encode_prompts(sample_prompts(16, "test", seed=0), WordVocab(build_vocab())).to(device)
    cache = ref.run_with_cache(model, batch.tokens)
    inp = ref.gather_head_inputs(model, batch, model.cfg.n_layers - 1, 0, cache=cache)
    parts = dict(ref.decompose_all(inp), **ref.score_grids(inp))
    assert all(v.device.type == torch.device(device).type for v in parts.values())
    return {k: v.cpu() for k, v in parts.items()}, ref.max_sum_error(inp, parts)


@pytest.mark.cuda
def test_cpu_and_cuda_agree_on_the_ioi_decomposition(cuda_device):
    """Lesson 5 runs on the GPU: the decompositions add up there too, and match the CPU's."""
    on_cpu, cpu_err = _ioi_decomposition_on("cpu")
    on_gpu, gpu_err = _ioi_decomposition_on(cuda_device)
    assert cpu_err < 1e-4 and gpu_err < 1e-4, (cpu_err, gpu_err)
    for key, expected in on_cpu.items():
        torch.testing.assert_close(on_gpu[key], expected, rtol=1e-3, atol=1e-3,
                                   msg=lambda m, key=key: f"{key}: CPU and CUDA differ: {m}")
