"""Feature flow: decoder-cosine links to the previous residual SAE and this layer's MLP / attention SAEs, the
origin classes, graphs, and `ttslens flow` end to end."""

from __future__ import annotations

import json

import pytest
import torch

from ttslens.sae import notes
from ttslens.sae.base import SAEConfig, make_sae
from ttslens.sae.errors import BadInput
from ttslens.sae.files import save_sae
from ttslens.sae.flow import Cutoffs, SAESet, best_matches, flow_graph, origin
from ttslens.sae.hooks import hook_name

D, F = 16, 40


def _sae(seed: int):
    torch.manual_seed(seed)
    return make_sae(SAEConfig(d_in=D, d_sae=F, k=4))


def _save(root, sae, layer: int, hook: str = "resid"):
    return save_sae(
        sae, root / f"{hook}_{layer}", {"layer": layer, "hook_name": hook_name(layer, hook), "backbone": "x"}
    )


def test_an_sae_set_of_one_sae_is_a_chain_of_identities(tmp_path):
    sae = _sae(0)
    for layer in range(3):
        _save(tmp_path, sae, layer)
    ss = SAESet(tmp_path)
    assert ss.layers() == [0, 1, 2]
    with notes.collect() as got:
        g = flow_graph(ss, 2, 5, depth=3)
    assert any("residual links only" in n for n in got)  # no MLP / attention SAEs here
    ids = {n["id"] for n in g["nodes"]}
    assert ids == {"resid/0/5", "resid/1/5", "resid/2/5"}
    assert sorted((e["from"], e["to"]) for e in g["edges"]) == [
        ("resid/0/5", "resid/1/5"),
        ("resid/1/5", "resid/2/5"),
    ]
    assert all(abs(e["cosine"] - 1) < 1e-4 for e in g["edges"])
    g0 = flow_graph(ss, 0, 5, depth=3)  # forward from the first layer: the same chain
    assert {(e["from"], e["to"]) for e in g0["edges"]} == {("resid/0/5", "resid/1/5"), ("resid/1/5", "resid/2/5")}


def test_a_feature_written_by_the_mlp_is_classed_so(tmp_path):
    prev, here, mlp, attn = _sae(1), _sae(2), _sae(3), _sae(4)
    v = torch.nn.functional.normalize(torch.randn(D), dim=0)
    with torch.no_grad():
        here.W_dec[3] = 2 * v
        mlp.W_dec[7] = 0.5 * v + 0.01 * torch.randn(D)
        prev.W_dec -= (prev.W_dec @ v)[:, None] * v  # nothing like v in the previous layer
    for sae, layer, hook in ((prev, 0, "resid"), (here, 1, "resid"), (mlp, 1, "mlp"), (attn, 1, "attn")):
        _save(tmp_path, sae, layer, hook)
    ss = SAESet(tmp_path)
    m = best_matches(ss, 1, 3)
    assert m["mlp"].features[0] == 7 and m["mlp"].cosines[0] > 0.99
    assert m["resid"].cosines[0] < 0.5
    assert origin(m, Cutoffs()) in ("MLP", "MLP+attention")
    assert origin(m, Cutoffs(module=0.999)) == "nowhere"  # a stricter cut-off drops the link
    g = flow_graph(ss, 1, 3, depth=2)
    assert {"from": "mlp/1/7", "to": "resid/1/3", "kind": "mlp"}.items() <= next(
        e for e in g["edges"] if e["kind"] == "mlp"
    ).items()


def test_bad_input(tmp_path):
    _save(tmp_path, _sae(0), 0)
    ss = SAESet(tmp_path)
    with pytest.raises(BadInput, match="out of range"):
        best_matches(ss, 0, F)
    with pytest.raises(BadInput, match="no residual SAE for layer 4"):
        best_matches(ss, 4, 0)
    with pytest.raises(BadInput, match=r"\[0, 1\]"):
        Cutoffs(resid=1.5)
    _save(tmp_path / "other", make_sae(SAEConfig(d_in=8, d_sae=F, k=4)), 1)
    with pytest.raises(BadInput, match="different models"):
        SAESet(tmp_path)


def test_flow_command_writes_json_png_and_html(tmp_path):
    from ttslens.app.cli import main

    sae = _sae(0)
    for layer in range(3):
        _save(tmp_path / "saes", sae, layer)
    _save(tmp_path / "saes", _sae(5), 2, "attn")
    assert main(["flow", "--sae-dir", str(tmp_path / "saes"), "--feature", "2/9", "--out", str(tmp_path / "f")]) == 0
    g = json.loads((tmp_path / "f" / "resid_2_9.json").read_text())
    assert g["root"] == "resid/2/9" and len(g["edges"]) >= 2
    assert (tmp_path / "f" / "resid_2_9.png").stat().st_size > 1000
    page = (tmp_path / "f" / "resid_2_9.html").read_text()
    assert "<svg" in page and "resid/1/9" in page
    assert main(["flow", "--sae-dir", str(tmp_path / "saes"), "--feature", "2-9"]) == 2


def test_hooks_read_a_layers_mlp_and_attention_outputs(tiny_lm):
    """`--hook mlp|attn`: the recorded rows are what the block returns, on a text LM and a TTS backbone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.audio.tiny_backbones import SlotFrameTTS
    from ttslens.audio import Intervention
    from ttslens.sae.hooks import hook_modules, layer_output, residual_layers

    model = AutoModelForCausalLM.from_pretrained(str(tiny_lm / "model")).eval()
    ids = AutoTokenizer.from_pretrained(str(tiny_lm / "model"))("the cat sat", return_tensors="pt")["input_ids"]
    seen = {}
    for hook, mod in (("mlp", residual_layers(model)[1].mlp), ("attn", residual_layers(model)[1].self_attn)):
        h = mod.register_forward_hook(lambda _m, _i, out, hook=hook: seen.__setitem__(hook, out))
        got = layer_output(model, 1, hook, input_ids=ids)
        h.remove()
        want = seen[hook][0] if isinstance(seen[hook], tuple) else seen[hook]
        torch.testing.assert_close(got, want)
    with pytest.raises(BadInput, match="unknown --hook"):
        hook_modules(residual_layers(model), "ffn")

    bb = SlotFrameTTS()
    tokens = torch.randint(0, bb.codebook_size, (6, 1), generator=torch.Generator().manual_seed(0))
    out = {}
    h = bb.layers()[1].mlp.register_forward_hook(lambda _m, _i, o: out.__setitem__("mlp", o))
    push = Intervention(layer=0, edit=lambda x: x + 1.0, scope="all")
    tf = bb.teacher_forced_batch([("a cat", tokens)], layers=[1], hook="mlp", interventions=[push])[0]
    h.remove()
    torch.testing.assert_close(tf.hidden[1], out["mlp"][0].float())
    clean = bb.teacher_forced_batch([("a cat", tokens)], layers=[1], hook="mlp")[0]
    assert not torch.allclose(clean.hidden[1], tf.hidden[1])  # the edit on the residual reached the MLP


def test_schedules_by_hand():
    import math

    from ttslens.sae.flow import schedule

    layers = [1, 2, 3, 4]
    assert schedule("constant", 2.0, layers, 3) == {1: 2.0, 2: 2.0, 3: 2.0, 4: 2.0}
    exp = schedule("exp", 2.0, layers, 3, alpha=-0.05)
    assert exp[3] == 2.0 and math.isclose(exp[1], 2 * math.exp(-0.1)) and math.isclose(exp[4], 2 * math.exp(-0.05))
    assert schedule("linear", 3.0, layers, 3) == {1: 1.0, 2: 2.0, 3: 3.0, 4: 2.0}  # farthest (2 away): s / 3
    with pytest.raises(BadInput, match="schedule"):
        schedule("cosine", 1.0, layers, 3)


def test_steering_a_graph_with_zero_strength_is_a_no_op_and_removal_removes(tmp_path):
    from tests.audio.tiny_backbones import SlotFrameTTS
    from ttslens.audio import Intervention
    from ttslens.sae.flow import flow_edit_fns

    bb = SlotFrameTTS()
    sae = make_sae(SAEConfig(d_in=bb.d_model, d_sae=F, k=4))
    for layer in range(3):
        _save(tmp_path, sae, layer)
    ss = SAESet(tmp_path)
    g = flow_graph(ss, 2, 4, depth=2)

    def run(strength, mode="steer"):
        ivs = [Intervention(layer, fn) for layer, fn in flow_edit_fns(g, ss, strength, "exp", mode).items()]
        return bb.generate("a cat sat", seed=1, max_tokens=12, min_tokens=12, interventions=ivs, record=[1])

    plain = bb.generate("a cat sat", seed=1, max_tokens=12, min_tokens=12, record=[1])
    zero = run(0.0)
    assert torch.equal(zero.tokens, plain.tokens) and torch.equal(zero.hidden[1], plain.hidden[1])
    v = ss.directions("resid", 1)[4]
    removed = run(0.0, "rescale")  # r = 0 at every layer of the graph: no component along v is left
    speech = removed.sequence.modality == 1
    assert (removed.hidden[1][speech] @ v).abs().max() < 1e-4
    pushed = run(5.0)
    assert ((pushed.hidden[1][speech] - plain.hidden[1][speech]) @ v).min() > 1  # moved along v


def test_flow_steer_strings_resolve_to_the_graphs_layers():
    """'3/5:flow=2' (or 'flow:3/5=2'): feature 5 and its chain over the loaded SAEs, scheduled per layer."""
    import math

    from ttslens.sae.steering import LoadedSAE, SAESteerer, is_steer_spec, parse_steer

    torch.manual_seed(0)
    sae, other = (make_sae(SAEConfig(d_in=128, d_sae=F, k=4)) for _ in range(2))  # 128-d: random cosines stay small

    class Steerer(SAESteerer):
        def __init__(self, saes):
            self.saes = saes

        def mean_act(self, s, f):
            return 0.5

    from pathlib import Path

    st = Steerer([LoadedSAE(Path(f"/x/{i}"), s, i, {}) for i, s in enumerate([sae, sae, sae, other])])
    assert parse_steer("flow:2/5=2") == parse_steer("2/5:flow=2") and is_steer_spec("flow:2/5=2")
    edits = st.resolve("flow:2/5=2")
    by_layer = {e.layer: e.edit for e in edits}
    assert set(by_layer) == {0, 1, 2}  # layer 3's SAE shares no direction with feature 5: not in the graph
    assert all(e.feature == 5 and e.op == "add" and e.mean_act == 0.5 for e in by_layer.values())
    assert by_layer[2].alpha == 2 and math.isclose(by_layer[0].alpha, 2 * math.exp(-0.1))
    with pytest.raises(BadInput, match="LAYER/ID:flow"):
        st.resolve("5:flow=2")
