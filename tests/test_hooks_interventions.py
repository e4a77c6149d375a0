"""soundlens.hooks.interventions: edits at sites, rows under CFG, steps, validation up front."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from soundlens.errors import SoundlensError, UnknownSiteError
from soundlens.hooks.capture import Capture
from soundlens.hooks.interventions import (
    Edit,
    Intervene,
    InterventionError,
    ablate,
    add,
    cfg_conditional_rows,
    cfg_unconditional_rows,
    set_projection,
)
from soundlens.models import load

PROMPTS = ["jazz drums", "calm piano"]  # B = 2: the CFG-doubled decoder batch has 4 rows


@pytest.fixture(scope="module")
def mg(tiny_dir):
    return load(tiny_dir("musicgen"))


@pytest.fixture(scope="module")
def w2v(tiny_dir):
    return load(tiny_dir("wav2vec2"))


def _theta(dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim)
    return v / np.linalg.norm(v)


def _generate(lm, edits=None, *, new_tokens: int = 4, guidance: float = 3.0):
    """Seeded sampling; returns (audio, per-call logits, per-call decoder input codes)."""
    logits, codes = [], []
    dec = lm.model.decoder
    h1 = dec.register_forward_hook(lambda m, a, o: logits.append(o.logits.detach().clone()))
    h2 = dec.register_forward_pre_hook(
        lambda m, a, kw: codes.append(kw["input_ids"].detach().clone()), with_kwargs=True
    )
    x = lm.inputs(text=PROMPTS)
    try:
        with torch.no_grad(), (Intervene(lm, edits) if edits is not None else _null()):
            torch.manual_seed(0)
            audio = lm.model.generate(**x, max_new_tokens=new_tokens, do_sample=True,
                                      guidance_scale=guidance)
    finally:
        h1.remove()
        h2.remove()
    return audio, logits, codes


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _width(lm, site: str) -> int:
    return lm.model.config.decoder.hidden_size if "heads" not in site else lm.site(site).head_dim


# ---- alpha = 0 ------------------------------------------------------------------------------
def test_alpha_zero_is_bit_identical_wav2vec2(w2v) -> None:
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype("f4")
    x = w2v.inputs(audio, sampling_rate=16000)
    with torch.no_grad():
        base = w2v.model(**x).last_hidden_state
        edits = [add("encoder.layers.0", _theta(32), alpha=0.0, sigma=3.0),
                 ablate("encoder.layers.1.attn.heads.0", _theta(16), alpha=0.0)]
        with Intervene(w2v, edits) as iv:
            same = w2v.model(**x).last_hidden_state
        changed_edit = add("encoder.layers.0", _theta(32), alpha=5.0)
        with Intervene(w2v, changed_edit):
            changed = w2v.model(**x).last_hidden_state
        after = w2v.model(**x).last_hidden_state  # hooks gone after exit
    assert torch.equal(base, same)
    assert iv.calls == [1, 1] and iv.applied == [[], []]
    assert not torch.allclose(base, changed)
    assert torch.equal(base, after)


def test_alpha_zero_is_bit_identical_musicgen_generate(mg) -> None:
    audio, logits, codes = _generate(mg)
    edits = [add("decoder.layers.1", _theta(32), alpha=0.0),
             add("decoder.layers.0.attn.heads.1", _theta(16), alpha=0.0)]
    audio2, logits2, codes2 = _generate(mg, edits)
    assert torch.equal(audio, audio2)
    assert all(torch.equal(a, b) for a, b in zip(logits, logits2, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(codes, codes2, strict=True))


def test_nonzero_add_changes_musicgen_logits_and_codes(mg) -> None:
    _, logits, codes = _generate(mg, new_tokens=6)
    _, logits2, codes2 = _generate(mg, add("decoder.layers.1", _theta(32), alpha=30.0),
                                   new_tokens=6)
    assert not torch.allclose(logits[0], logits2[0])
    assert any(not torch.equal(a, b) for a, b in zip(codes, codes2, strict=True))


# ---- rows -----------------------------------------------------------------------------------
def test_cfg_row_helpers() -> None:
    assert cfg_conditional_rows(2) == slice(0, 2)
    assert cfg_unconditional_rows(2) == slice(2, 4)


def test_conditional_rows_only_under_cfg(mg) -> None:
    site = "decoder.layers.0"
    b = len(PROMPTS)
    module = mg.module(site)
    pre: list[torch.Tensor] = []
    # Registered before the intervention: sees each call's activation before the edit.
    h = module.register_forward_hook(lambda m, a, o: pre.append(o.detach().clone()))
    try:
        with (
            torch.no_grad(),
            Capture(mg, [site, "decoder.layers.1"], "none", every_call=True) as base,
        ):
            torch.manual_seed(0)
            mg.model.generate(**mg.inputs(text=PROMPTS), max_new_tokens=3, do_sample=True)
        pre.clear()
        edit = add(site, _theta(32), alpha=10.0, rows=cfg_conditional_rows(b))
        # Entered after the intervention: sees each call's activation after the edit.
        with (
            torch.no_grad(),
            Intervene(mg, edit),
            Capture(mg, [site, "decoder.layers.1"], "none", every_call=True) as cap,
        ):
            torch.manual_seed(0)
            mg.model.generate(**mg.inputs(text=PROMPTS), max_new_tokens=3, do_sample=True)
    finally:
        h.remove()
    post = cap.activations[site]
    assert len(post) == len(pre) == 4 and post[0].shape[0] == 2 * b
    for before, after in zip(pre, post, strict=True):
        assert torch.equal(before[b:], after[b:])  # unconditional rows untouched
        assert not torch.allclose(before[:b], after[:b])  # conditional rows moved
        delta = (after[:b] - before[:b]).float()
        assert torch.allclose(delta, torch.full_like(delta, 0) + 10.0 * torch.tensor(
            _theta(32), dtype=delta.dtype), atol=1e-5)
    # Step 0 sees the same start token either way: downstream unconditional rows match too.
    nxt_base, nxt = base.activations["decoder.layers.1"][0], cap.activations["decoder.layers.1"][0]
    assert torch.equal(nxt_base[b:], nxt[b:])
    assert not torch.allclose(nxt_base[:b], nxt[:b])


def test_explicit_row_list(w2v) -> None:
    x = w2v.inputs([np.ones(8000, "f4") * 0.1, np.ones(8000, "f4") * -0.1], sampling_rate=16000)
    site = "encoder.layers.0"
    with torch.no_grad(), Capture(w2v, [site], "none") as base:
        w2v.model(**x)
    with (
        torch.no_grad(),
        Intervene(w2v, add(site, _theta(32), alpha=2.0, rows=[1])),
        Capture(w2v, [site], "none") as cap,
    ):
        w2v.model(**x)
    assert torch.equal(base.activations[site][0], cap.activations[site][0])
    assert not torch.allclose(base.activations[site][1], cap.activations[site][1])
    with (
        torch.no_grad(),
        Intervene(w2v, add(site, _theta(32), rows=[5])),
        pytest.raises(InterventionError, match="out of range"),
    ):
        w2v.model(**x)


# ---- steps and schedules --------------------------------------------------------------------
def test_steps_restrict_which_calls_change(mg) -> None:
    site = "decoder.layers.1"
    module = mg.module(site)
    pre: list[torch.Tensor] = []
    h = module.register_forward_hook(lambda m, a, o: pre.append(o.detach().clone()))
    try:
        edit = add(site, _theta(32), alpha=5.0, steps={1, 3})
        with (
            torch.no_grad(),
            Intervene(mg, edit) as iv,
            Capture(mg, [site], "none", every_call=True) as cap,
        ):
            torch.manual_seed(0)
            mg.model.generate(**mg.inputs(text=PROMPTS), max_new_tokens=4, do_sample=True)
    finally:
        h.remove()
    post = cap.activations[site]
    assert iv.calls == [5] and iv.applied == [[1, 3]]
    changed = [i for i, (a, b) in enumerate(zip(pre, post, strict=True)) if not torch.equal(a, b)]
    assert changed == [1, 3]


def test_schedule_multiplies_alpha_and_zero_skips(w2v) -> None:
    x = w2v.inputs(np.ones(8000, "f4") * 0.1, sampling_rate=16000)
    site = "encoder.layers.0"
    theta = torch.tensor(_theta(32), dtype=torch.float32)
    seen: list[int] = []

    def schedule(step: int) -> float:
        seen.append(step)
        return [2.0, 0.0, 0.5][step]

    pre: list[torch.Tensor] = []
    h = w2v.module(site).register_forward_hook(lambda m, a, o: pre.append(o.detach().clone()))
    try:
        with (
            torch.no_grad(),
            Intervene(w2v, add(site, theta, alpha=3.0, sigma=1.0, schedule=schedule)) as iv,
            Capture(w2v, [site], "none", every_call=True) as cap,
        ):
            for _ in range(3):
                w2v.model(**x)
    finally:
        h.remove()
    assert seen == [0, 1, 2] and iv.applied == [[0, 2]]
    for i, k in enumerate([6.0, 0.0, 1.5]):
        delta = cap.activations[site][i] - pre[i]
        assert torch.allclose(delta, (k * theta).expand_as(delta), atol=1e-5)
    assert torch.equal(cap.activations[site][1], pre[1])


# ---- ops ------------------------------------------------------------------------------------
@pytest.mark.parametrize("site", ["encoder.layers.1", "encoder.layers.0.mlp"])
def test_ablate_and_set_projection(w2v, site: str) -> None:
    x = w2v.inputs((0.1 * np.random.default_rng(1).standard_normal(16000)).astype("f4"),
                   sampling_rate=16000)
    theta = torch.tensor(_theta(32, seed=3), dtype=torch.float32)
    with torch.no_grad(), Capture(w2v, [site], "none") as base:
        w2v.model(**x)
    with torch.no_grad(), Intervene(w2v, ablate(site, theta)), Capture(w2v, [site], "none") as ab:
        w2v.model(**x)
    with (
        torch.no_grad(),
        Intervene(w2v, set_projection(site, theta * 7.0, value=2.5)),
        Capture(w2v, [site], "none") as st,
    ):
        w2v.model(**x)
    a0, a1, a2 = base.activations[site], ab.activations[site], st.activations[site]
    assert (a0 @ theta).abs().max() > 1e-2
    assert (a1 @ theta).abs().max() < 1e-5
    assert torch.allclose(a2 @ theta, torch.full_like(a2 @ theta, 2.5), atol=1e-5)
    # Only the component along theta changed.
    resid0 = a0 - (a0 @ theta)[..., None] * theta
    resid1 = a1 - (a1 @ theta)[..., None] * theta
    assert torch.allclose(resid0, resid1, atol=1e-5)


def test_head_edit_changes_only_its_slice(mg) -> None:
    site = "decoder.layers.1.attn.heads.1"
    s = mg.site(site)
    proj = mg.module(s)
    ins: list[tuple[torch.Tensor, torch.Tensor]] = []

    def spy(m, a):  # runs after the edit's pre-hook: compare with the raw input stored first
        ins.append(a[0].detach().clone())

    raw: list[torch.Tensor] = []
    h0 = proj.register_forward_pre_hook(lambda m, a: raw.append(a[0].detach().clone()))
    try:
        with torch.no_grad(), Intervene(mg, add(site, _theta(s.head_dim), alpha=4.0)):
            h1 = proj.register_forward_pre_hook(spy)
            try:
                torch.manual_seed(0)
                mg.model.generate(**mg.inputs(text=PROMPTS), max_new_tokens=2, do_sample=True)
            finally:
                h1.remove()
    finally:
        h0.remove()
    lo, hi = s.head * s.head_dim, (s.head + 1) * s.head_dim
    assert len(ins) == len(raw) == 3
    for before, after in zip(raw, ins, strict=True):
        assert torch.equal(before[..., :lo], after[..., :lo])
        assert torch.equal(before[..., hi:], after[..., hi:])
        delta = after[..., lo:hi] - before[..., lo:hi]
        target = 4.0 * torch.tensor(_theta(s.head_dim), dtype=delta.dtype)
        assert torch.allclose(delta, target.expand_as(delta), atol=1e-5)


def test_tuple_outputs_replace_only_first_tensor() -> None:
    from soundlens.hooks.interventions import replace_first_tensor

    a, b = torch.zeros(2), torch.ones(2)
    new, done = replace_first_tensor((None, (a, b), b), torch.full((2,), 5.0))
    assert done and new[0] is None and torch.equal(new[1][0], torch.full((2,), 5.0))
    assert new[1][1] is b and new[2] is b


# ---- validation before anything runs ---------------------------------------------------------
def _counting(lm):
    calls = []
    h = lm.model.register_forward_pre_hook(lambda m, a: calls.append(1))
    h2 = lm.model.decoder.register_forward_pre_hook(lambda m, a: calls.append(1))
    return calls, [h, h2]


@pytest.mark.parametrize(
    ("edit", "err", "pattern"),
    [
        (lambda: add("decoder.layers.1", np.ones(31)), InterventionError,
         r"decoder\.layers\.1.*width 31.*is 32"),
        (lambda: add("decoder.layers.0.attn.heads.0", np.ones(32)), InterventionError,
         r"heads\.0.*width 32.*head_dim is 16"),
        (lambda: add("decoder.layers.9", np.ones(32)), UnknownSiteError, r"decoder\.layers\.9"),
        (lambda: add("decoder.layers.1", np.zeros(32)), InterventionError, "zero vector"),
    ],
)
def test_bad_edits_fail_before_generation(mg, edit, err, pattern) -> None:
    calls, handles = _counting(mg)
    try:
        with (
            pytest.raises(err, match=pattern) as info,
            torch.no_grad(),
            Intervene(mg, [add("decoder.layers.0", _theta(32)), edit()]),
        ):
            mg.model.generate(**mg.inputs(text=PROMPTS), max_new_tokens=2)
    finally:
        for h in handles:
            h.remove()
    assert isinstance(info.value, SoundlensError)
    assert calls == []
    # Nothing stayed registered on the model.
    assert not mg.module("decoder.layers.0")._forward_hooks


def test_bad_op_and_hooks_removed_on_error(w2v) -> None:
    with pytest.raises(InterventionError, match="unknown edit op"):
        Edit("encoder.layers.0", _theta(32), op="multiply")  # type: ignore[arg-type]
    x = w2v.inputs(np.ones(8000, "f4"), sampling_rate=16000)
    with (
        pytest.raises(RuntimeError, match="boom"),
        torch.no_grad(),
        Intervene(w2v, add("encoder.layers.0", _theta(32))),
    ):
        w2v.model(**x)
        raise RuntimeError("boom")
    assert not w2v.module("encoder.layers.0")._forward_hooks


# ---- channels-first sites -------------------------------------------------------------------
def test_channels_first_site_adds_along_channels(w2v) -> None:
    x = w2v.inputs(np.ones(8000, "f4") * 0.1, sampling_rate=16000)
    site = "feature_extractor"  # (batch, channels=16, time)
    assert w2v.site(site).channels_first
    theta = torch.tensor(_theta(16), dtype=torch.float32)
    pre: list[torch.Tensor] = []
    h = w2v.module(site).register_forward_hook(lambda m, a, o: pre.append(o.detach().clone()))
    post: list[torch.Tensor] = []
    try:
        with torch.no_grad(), Intervene(w2v, add(site, theta, alpha=2.0)):
            h2 = w2v.module(site).register_forward_hook(
                lambda m, a, o: post.append(o.detach().clone()))
            try:
                w2v.model(**x)
            finally:
                h2.remove()
    finally:
        h.remove()
    delta = post[0] - pre[0]
    assert delta.shape[1] == 16
    assert torch.allclose(delta, (2.0 * theta)[None, :, None].expand_as(delta), atol=1e-5)


def test_width_unknown_up_front_is_checked_on_first_call(w2v) -> None:
    x = w2v.inputs(np.ones(8000, "f4") * 0.1, sampling_rate=16000)
    # A conv leaf (raw module path) knows its width up front ...
    with pytest.raises(InterventionError, match="width 15.*is 16"):
        Intervene(w2v, add("feature_extractor.conv_layers.1.conv", np.ones(15)))
    # ... a container does not: the first call names the site and both widths.
    with (
        torch.no_grad(),
        Intervene(w2v, add("feature_extractor", np.ones(15))),
        pytest.raises(InterventionError, match="'feature_extractor' has feature width 16 but "
                      "the direction has width 15"),
    ):
        w2v.model(**x)
