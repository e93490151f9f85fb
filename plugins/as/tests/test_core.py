"""VAE-AS against the core: the objective identity, gradient routing, logging, eval.json,
resume, stacks with other plugins and config errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from as_helpers import AS_ID, as_entry

import vaecore
from vaecore.errors import ConfigError, PluginError
from vaecore.hooktypes import Batch, StepContext
from vaecore.testing import load, make_model, make_registry, run_training, synthetic_dataset, tiny_config

N_TRAIN = 256


class Shift:
    """latent_map z = y + 1: the decoder's input differs from the posterior sample y."""

    api_version = vaecore.HOOK_API_VERSION

    @vaecore.hookimpl
    def latent_map(self, y):
        return y + 1.0


class L2:
    """Another extra_loss plugin: a small penalty on the posterior samples."""

    api_version = vaecore.HOOK_API_VERSION

    @vaecore.hookimpl
    def extra_loss(self, out):
        return {"l2": vaecore.Term(out.y.pow(2).sum(-1).mean(), weight=0.01)}


def registry():
    return make_registry({"shift": Shift, "l2": L2})


def _step(options=None, kl_weight=1.0, stack=None, seed=0):
    """A model with the plugin and the pieces of one training step on 32 training examples."""
    data = synthetic_dataset(N_TRAIN)
    plugins = stack if stack is not None else [as_entry(**(options or {}))]
    model = make_model(tiny_config(plugins, model={"latent_dim": 3}), data, registry())
    model.train()
    index = torch.arange(40, 72)
    ctx = StepContext(model=model, training=True, kl_weight=kl_weight, batch=Batch(data.train.x[index], index))
    torch.manual_seed(seed)
    out = model(ctx.batch.x, ctx, 1)
    bound = model.stack.bound(out, ctx)
    terms = dict(model.stack.extra_loss(out, ctx))
    return model, out, bound, terms


def _grads(model, loss, groups=("encoder", "decoder", f"plugins.{AS_ID}")):
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {
        name: p.grad.clone() if p.grad is not None else None
        for name, p in model.named_parameters()
        if name.startswith(groups)
    }


def _total(bound, terms):
    return bound.loss + sum(t.weight * t.value for t in terms.values())


# ----------------------------------------------------------------------------------------------
# the objective


def test_alpha_beta_one_is_exactly_the_elbo():
    model, out, bound, terms = _step()
    sc = terms[f"{AS_ID}.sc"].value
    mi, md = terms[f"{AS_ID}.mi"], terms[f"{AS_ID}.md"]
    assert (mi.weight, md.weight) == (0.0, 0.0)
    assert float((mi.value + md.value).detach()) == pytest.approx(
        float(out.kl().mean().detach()), abs=1e-5
    )  # MI + MD = KL
    total = _total(bound, terms)
    assert float((total - sc).detach()) == pytest.approx(float(bound.loss.detach()), abs=1e-5)
    g_total = _grads(model, total)
    g_elbo = _grads(model, bound.loss)
    for name, g in g_elbo.items():
        if name.startswith(("encoder", "decoder")):
            assert torch.allclose(g_total[name], g, atol=1e-6), name


@pytest.mark.parametrize("estimator", [None, "cross_entropy", "classifier_entropy"])
def test_general_alpha_beta_objective_and_encoder_gradient(estimator):
    alpha, beta, w = 2.0, 0.5, 0.7
    options = {"alpha": alpha, "beta": beta} | ({"mi_estimator": estimator} if estimator else {})
    model, out, bound, terms = _step(options, kl_weight=w)
    plugin = model.plugins[AS_ID]
    rec, kl = out.log_px.mean(), out.kl().mean()
    # reference: the classifier as a frozen function of the posterior samples y (not z)
    frozen = {k: p.detach() for k, p in plugin.net.named_parameters()}
    logp = torch.func.functional_call(plugin.net, frozen, (out.y,))
    logp = logp.view(*out.y.shape[:-1], plugin.heads, plugin.classes).log_softmax(-1)
    if estimator == "classifier_entropy":  # log N - E[H(s(x|z))]
        mi_ref = plugin.log_n + (logp.exp() * logp).sum((-1, -2)).mean()
    else:  # the default: log N - SC, SC the cross-entropy of the sample's own label
        own = plugin.labels(torch.arange(40, 72)).expand(*logp.shape[:-1]).unsqueeze(-1)
        mi_ref = plugin.log_n + logp.gather(-1, own).squeeze(-1).sum(-1).mean()
    reference = -rec + w * (beta * kl + (alpha - beta) * mi_ref)
    total = _total(bound, terms)
    sc = terms[f"{AS_ID}.sc"].value
    assert float(terms[f"{AS_ID}.mi"].value.detach()) == pytest.approx(float(mi_ref.detach()), abs=1e-5)
    assert float((total - sc).detach()) == pytest.approx(float(reference.detach()), abs=1e-4)
    g_total, g_ref = _grads(model, total), _grads(model, reference)
    for name in g_total:
        if name.startswith("encoder"):
            assert torch.allclose(g_total[name], g_ref[name], atol=1e-5), name
        if name.startswith("decoder"):
            assert torch.allclose(g_total[name], g_ref[name], atol=1e-6), name


def test_gradient_routing():
    model, _out, _bound, terms = _step({"alpha": 3.0, "beta": 1.0})
    sc, mi, md = (terms[f"{AS_ID}.{k}"].value for k in ("sc", "mi", "md"))

    def touched(grads, prefix):
        return [g is not None and bool(g.abs().sum() > 0) for name, g in grads.items() if name.startswith(prefix)]

    g = _grads(model, sc)  # SC: classifier only (it sees detached samples)
    assert all(touched(g, f"plugins.{AS_ID}")) and not any(touched(g, "encoder")) and not any(touched(g, "decoder"))
    g = _grads(model, mi)  # MI: encoder only, through y; the classifier's weights never
    assert any(touched(g, "encoder")) and not any(touched(g, f"plugins.{AS_ID}")) and not any(touched(g, "decoder"))
    g = _grads(model, md)  # MD = KL - MI: encoder only
    assert any(touched(g, "encoder")) and not any(touched(g, f"plugins.{AS_ID}"))


@pytest.mark.parametrize("options", [{"alpha": 0.5, "beta": 0.5}, {"alpha": 3.0, "mi_gradient": False}])
def test_mi_gradient_skipped_when_not_needed(options):
    # alpha == beta: MI's coefficient in the loss is zero; mi_gradient = false: MI is a constant.
    model, out, _bound, terms = _step(options)
    mi, md = terms[f"{AS_ID}.mi"].value, terms[f"{AS_ID}.md"].value
    assert not mi.requires_grad
    g_md, g_kl = _grads(model, md), _grads(model, out.kl().mean())
    for name, g in g_kl.items():
        if name.startswith("encoder"):
            assert torch.allclose(g_md[name], g, atol=1e-6)


def test_classifier_sees_y_not_z():
    model, out, _bound, terms = _step(stack=[{"name": "shift"}, as_entry(), {"name": "l2"}])
    assert torch.allclose(out.z, out.y + 1.0)
    plugin = model.plugins[AS_ID]
    with torch.no_grad():
        sc_y, _ = plugin.statistics(out.y, torch.arange(40, 72))
    assert float(terms[f"{AS_ID}.sc"].value.detach()) == pytest.approx(float(sc_y), abs=1e-6)
    assert set(terms) == {f"{AS_ID}.mi", f"{AS_ID}.md", f"{AS_ID}.sc", "l2.l2"}


def test_no_terms_in_validation():
    model, out, _bound, _terms = _step()
    ctx = StepContext(model=model, training=False, batch=Batch(out.x, torch.arange(32)))
    assert model.stack.extra_loss(out, ctx) == []


# ----------------------------------------------------------------------------------------------
# training runs


def _run(tmp_path, name, options=None, epochs=3, stack=None, resume=False, **sections):
    raw = tiny_config(stack if stack is not None else [as_entry(**(options or {}))], **sections)
    raw["train"]["epochs"] = epochs
    raw.setdefault("eval", {})["checkpoint"] = "last"
    trainer, results = run_training(raw, tmp_path / name, synthetic_dataset(N_TRAIN), registry(), resume=resume)
    lines = [json.loads(s) for s in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return trainer, results, lines


def test_training_logs_mi_md_sc_and_eval_json(tmp_path):
    _trainer, results, lines = _run(tmp_path, "run", {"alpha": 0.5, "beta": 2.0, "hidden": [32]})
    p = AS_ID
    for rec in lines:
        assert rec[f"train.{p}.mi"] + rec[f"train.{p}.md"] == pytest.approx(rec["train.kl"], abs=1e-4)
        assert rec[f"{p}.md_eq10"] == pytest.approx(rec["train.kl"] - rec[f"{p}.mi_ba"], abs=1e-4)
        assert rec[f"{p}.mi_ba"] == pytest.approx(math.log(N_TRAIN) - rec[f"train.{p}.sc"], abs=1e-4)
        assert not [k for k in rec if k.startswith(f"valid.{p}.")]  # validation: the plain -ELBO
        assert rec["valid.loss"] == pytest.approx(-rec["valid.elbo"], rel=1e-6)
        # train.loss = -ELBO + (alpha - 1) MI + (beta - 1) MD + SC (no warm-up here: kl_weight 1)
        expected = -rec["train.elbo"] - 0.5 * rec[f"train.{p}.mi"] + rec[f"train.{p}.md"] + rec[f"train.{p}.sc"]
        assert rec["train.loss"] == pytest.approx(expected, rel=1e-4)
    # the classifier learns (from a random start above chance, log N)
    assert lines[-1][f"train.{p}.sc"] < lines[0][f"train.{p}.sc"]
    last = lines[-1]
    assert results[f"{p}.mi"] == pytest.approx(last[f"train.{p}.mi"], abs=1e-4)
    assert results[f"{p}.md"] == pytest.approx(last[f"train.{p}.md"], abs=1e-4)
    assert results[f"{p}.sc"] == pytest.approx(last[f"train.{p}.sc"], abs=1e-4)
    assert results[f"{p}.log_n"] == pytest.approx(math.log(N_TRAIN))
    assert (results[f"{p}.heads"], results[f"{p}.classes"]) == (1, N_TRAIN)
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved[f"{p}.mi"] == results[f"{p}.mi"]


def test_warmup_scales_the_corrections(tmp_path):
    # With warm-up the loss is -rec + w (alpha MI + beta MD) + SC, w = kl_weight of the iteration.
    _model, out, bound, terms = _step({"alpha": 0.2, "beta": 3.0}, kl_weight=0.25)
    assert terms[f"{AS_ID}.mi"].weight == pytest.approx(0.25 * (0.2 - 1))
    assert terms[f"{AS_ID}.md"].weight == pytest.approx(0.25 * (3.0 - 1))
    total = _total(bound, terms) - terms[f"{AS_ID}.sc"].value
    mi, md = terms[f"{AS_ID}.mi"].value, terms[f"{AS_ID}.md"].value
    expected = -out.log_px.mean() + 0.25 * (0.2 * mi + 3.0 * md)
    assert float(total.detach()) == pytest.approx(float(expected.detach()), abs=1e-4)


def test_resume_equals_uninterrupted(tmp_path):
    options = {"alpha": 0.5, "beta": 1.5, "hidden": [16]}
    full, _, full_lines = _run(tmp_path, "full", options, epochs=2)
    _run(tmp_path, "part", options, epochs=1)
    resumed, _, part_lines = _run(tmp_path, "part", options, epochs=2, resume=True)
    assert part_lines == [{**a, "seconds": b["seconds"]} for a, b in zip(full_lines, part_lines)]
    a, b = full.model.plugins[AS_ID], resumed.model.plugins[AS_ID]
    assert torch.equal(a.last, b.last) and bool(a.last.abs().sum() > 0)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_stack_with_installed_plugins(tmp_path):
    names = make_registry().names()
    stack = [as_entry(alpha=0.5, hidden=[16]), {"name": "l2"}]
    if "du" in names:
        stack.insert(0, {"name": "du"})
    if "ne" in names:
        stack.append({"name": "ne"})
    _trainer, results, lines = _run(tmp_path, "stack", stack=stack, epochs=1)
    rec = lines[-1]
    assert f"train.{AS_ID}.mi" in rec and "train.l2.l2" in rec
    if "ne" in names:
        assert any(k.startswith("train.ne.") for k in rec)
    # the decomposition holds whatever posterior the stack produced (DU's, if installed)
    assert rec[f"train.{AS_ID}.mi"] + rec[f"train.{AS_ID}.md"] == pytest.approx(rec["train.kl"], abs=1e-4)
    assert f"{AS_ID}.mi" in results


# ----------------------------------------------------------------------------------------------
# config errors


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"alpha": -1.0}, "plugins[0].alpha: must be >= 0, got -1.0"),
        ({"beta": -0.5}, "plugins[0].beta: must be >= 0, got -0.5"),
        ({"classes": 1}, "plugins[0].classes: must be > 1, got 1"),
        ({"heads": 0}, "plugins[0].heads: must be > 0, got 0"),
        ({"max_classes": 1}, "plugins[0].max_classes: must be > 1, got 1"),
        ({"hidden": [500, 0]}, "plugins[0].hidden: must be > 0, got 0"),
        ({"activation": "swish"}, "plugins[0].activation: must be one of"),
        (
            {"mi_estimator": "mine"},
            "plugins[0].mi_estimator: must be one of 'cross_entropy', 'classifier_entropy', got 'mine'",
        ),
        (
            {"mi_estimator": "entropy"},  # the old default, renamed: refused with both names
            "plugins[0].mi_estimator: 'entropy' is no longer accepted (it is now 'classifier_entropy', "
            "whose encoder gradient is not the gradient of I_q): use 'cross_entropy', the default, or "
            "'classifier_entropy' to reproduce runs made with 'entropy'",
        ),
        ({"alpha": "big"}, "plugins[0].alpha: expected a number, got 'big'"),
        ({"gamma": 1.0}, "plugins[0].gamma: unknown key"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ConfigError) as err:
        load(tiny_config([as_entry(**options)]), registry())
    assert message in str(err.value)


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load(tiny_config([as_entry(alpha=-1.0, classes=1)]), registry())
    assert "plugins[0].alpha" in str(err.value) and "plugins[0].classes" in str(err.value)


def test_too_few_labels_named_at_build():
    with pytest.raises(PluginError, match="give 100 labels, fewer than the 256 training examples"):
        make_model(tiny_config([as_entry(heads=2, classes=10)]), synthetic_dataset(N_TRAIN), registry())


def test_default_id_of_the_as_plugin():
    config = load(tiny_config([{"name": "as"}]), registry())
    assert config.plugins[0].id == "as"


def test_several_posterior_samples_and_whole_split_estimate():
    data = synthetic_dataset(N_TRAIN)
    model = make_model(tiny_config([as_entry(alpha=2.0, hidden=[8])], model={"latent_dim": 3}), data, registry())
    index = torch.arange(8)
    ctx = StepContext(model=model, training=True, batch=Batch(data.train.x[index], index))
    out = model(ctx.batch.x, ctx, 3)
    terms = dict(model.stack.extra_loss(out, ctx))
    plugin = model.plugins[AS_ID]
    with torch.no_grad():
        per_sample = [float(plugin.statistics(out.y[s], index)[0]) for s in range(3)]
    assert float(terms[f"{AS_ID}.sc"].value.detach()) == pytest.approx(sum(per_sample) / 3, abs=1e-5)
    from vaecore_as import estimate

    est = estimate(model, plugin, data.train)
    assert est["md"] == pytest.approx(est["kl"] - est["mi"]) and est["mi_ba"] == pytest.approx(plugin.log_n - est["sc"])
    assert est["mi"] == est["mi_ba"]  # the default estimator
    assert est["md_eq10"] == pytest.approx(est["md"])
    assert 0.0 <= est["mi_entropy"] <= plugin.log_n
    assert 0.0 < est["sc"] < 2 * plugin.log_n
