"""Every hook: what the core calls, in which order, and what it refuses."""

from __future__ import annotations

import json

import pytest
import torch

from tests.recording_plugins import ALL, LOG
from vaecore import ConfigError, PluginError, hookimpl
from vaecore.distributions import DiagonalGaussian
from vaecore.hookspecs import HOOK_KINDS
from vaecore.testing import load, make_model, make_registry, run_training, tiny_config
from vaecore.trainer import Trainer


@pytest.fixture
def registry():
    return make_registry(ALL, entry_points=False)


def recorders(*specs):
    return [{"name": "recorder", **spec} for spec in specs]


def test_every_hookspec_is_classified():
    import vaecore.hookspecs as hs

    specs = {name for name in dir(hs) if hasattr(getattr(hs, name), "vaecore_spec")}
    assert specs == set(HOOK_KINDS)
    assert set(HOOK_KINDS.values()) == {"folded", "claimed", "collected", "lifecycle", "registration"}


def test_setup_receives_model_sizes(registry, tiny_data):
    model = make_model(tiny_config(recorders({})), tiny_data, registry)
    info = model.plugins["recorder"].info
    assert (info.latent_dim, info.input_shape, info.n_train) == (4, (16,), 256)
    assert info.feature_dim == 32 and info.likelihood == "bernoulli"
    # the run's length: tiny_config trains 2 epochs of batches of 32 (256 rows: 8 steps each)
    assert (info.batch_size, info.epochs, info.steps_per_epoch) == (32, 2, 8)
    assert "plugins.recorder.steps" in model.state_dict()


def test_folded_hooks_follow_config_order(registry, tiny_data):
    raw = tiny_config(recorders({"tag": "a", "shift": 1.0, "scale": 2.0}, {"tag": "b", "shift": 10.0, "scale": 3.0}))
    model = make_model(raw, tiny_data, registry)
    x = tiny_data.train.x[:5]
    ctx = model.context(training=False)
    LOG.clear()
    out = model(x, ctx)
    assert [t for h, t in LOG if h == "pre_encode"] == ["a", "b"]
    assert [t for h, t in LOG if h == "post_posterior"] == ["a", "b"]
    # pre_encode: the encoder saw x * 2 * 3
    loc, _, _ = model.encoder(x * 6.0)
    torch.testing.assert_close(out.posterior.loc, loc + 11.0)
    # latent_map: z = y * 2 * 3, and the target stays the original x
    torch.testing.assert_close(out.z, out.y * 6.0)
    assert out.x is x


def test_two_instances_keep_separate_state(registry, tiny_data, tmp_path):
    raw = tiny_config(recorders({"tag": "a"}, {"tag": "b"}), train={"epochs": 1})
    trainer, results = run_training(raw, tmp_path / "run", tiny_data, registry)
    first, second = trainer.model.plugins["recorder1"], trainer.model.plugins["recorder2"]
    assert first is not second and first.options.tag == "a" and second.options.tag == "b"
    assert int(first.steps) == int(second.steps) == trainer.steps_per_epoch
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert "train.recorder1.l2" in record and "train.recorder2.l2" in record
    assert record["recorder1.steps"] == record["recorder2.steps"] == trainer.steps_per_epoch
    assert results["recorder1.n"] == results["recorder2.n"] == len(tiny_data.test)


def test_extra_loss_is_weighted_added_and_logged(registry, tiny_data, tmp_path):
    raw = tiny_config(recorders({"weight": 0.5}))
    trainer = Trainer(load(raw, registry), tmp_path / "run", registry=registry, dataset=tiny_data)
    batch = next(tiny_data.train.batches(8))
    names, values, loss = trainer._objective(batch, trainer.model.context(training=True), 1)
    assert names == ("loss", "elbo", "rec", "kl", "recorder.l2")
    _, _elbo, rec, kl, l2 = values
    torch.testing.assert_close(loss, -rec + kl + 0.5 * l2)
    assert values[0] is loss


def test_clashing_term_name_is_refused(registry, tiny_data, tmp_path):
    raw = tiny_config([{"name": "bad_name"}], train={"epochs": 1})
    with pytest.raises(PluginError, match=r"bad_name.*'elbo\.rec'.*identifiers"):
        run_training(raw, tmp_path / "run", tiny_data, registry)


def test_duplicate_ids_are_refused(registry):
    raw = tiny_config(recorders({"id": "same"}, {"id": "same"}))
    with pytest.raises(ConfigError, match=r"plugins\[1\]\.id: 'same' is already the id of plugins\[0\]"):
        make_model(raw, None, registry)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("extra_argument", r"temperature"),
        ("unknown_hook", r"before_everything"),
        ("default_argument", r"defaults \(ctx\)"),
        ("tryfirst_fold", r"pre_encode is folded in config order"),
    ],
)
def test_registration_refuses_bad_implementations(registry, tiny_data, name, message):
    with pytest.raises(PluginError, match=message):
        make_model(tiny_config([{"name": name}]), tiny_data, registry)


def test_claimed_hook_twice_is_a_config_error(registry, tiny_data):
    raw = tiny_config([{"name": "scaled_bound"}, {"name": "other_bound"}])
    with pytest.raises(ConfigError, match=r"'scaled_bound', 'other_bound' all implement bound"):
        make_model(raw, tiny_data, registry)


def test_bound_and_forward_samples_replace_the_elbo(registry, tiny_data, tmp_path):
    raw = tiny_config([{"name": "scaled_bound"}], train={"epochs": 1})
    trainer, _ = run_training(raw, tmp_path / "run", tiny_data, registry)
    assert trainer.model.stack.implementers("bound") == ["scaled_bound"]
    assert "elbo" not in trainer.model.stack.plugins
    assert (trainer.train_samples, trainer.valid_samples) == (3, 2)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert record["train.loss"] == pytest.approx(-2.0 * record["train.half"], rel=1e-5)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"free_bits": 0.5}, "train.free_bits: applies to the built-in ELBO only; plugin 'scaled_bound' provides"),
        ({"samples": 4}, "train.samples: plugin 'scaled_bound' sets the number of samples"),
    ],
)
def test_settings_a_claimant_overrides_are_refused(registry, tiny_data, train, message):
    with pytest.raises(ConfigError, match=message):
        make_model(tiny_config([{"name": "scaled_bound"}], train=train), tiny_data, registry)


def test_default_bound_is_the_builtin_elbo(registry, tiny_data):
    model = make_model(tiny_config(), tiny_data, registry)
    assert model.stack.implementers("bound") == ["elbo"]


def test_prior_hook_makes_kl_monte_carlo(registry, tiny_data):
    model = make_model(tiny_config([{"name": "wide_prior"}]), tiny_data, registry)
    assert model.stack.plugins["wide_prior"].encoder_seen is model.encoder
    out = model(tiny_data.train.x[:4], model.context(training=False), samples=7)
    assert out.kl_per_dim is None
    wide = torch.distributions.Normal(0.0, 2.0)
    torch.testing.assert_close(out.log_py, wide.log_prob(out.y).sum(-1))
    torch.testing.assert_close(out.kl(), (out.log_qy - out.log_py).mean(0))
    assert model.sample_prior(5).shape == (5, 16)


def test_sampling_and_representations_use_latent_map(registry, tiny_data):
    model = make_model(tiny_config(recorders({"scale": 3.0})), tiny_data, registry)
    x = tiny_data.test.x[:4]
    posterior, _ = model.encode(x, model.context(training=False))
    torch.testing.assert_close(model.represent(x), posterior.mean * 3.0)
    LOG.clear()
    model.sample_prior(4)
    assert ("latent_map", "r") in LOG


def test_train_step_can_take_over_the_step(registry, tiny_data, tmp_path):
    raw = tiny_config([{"name": "decoder_only"}], train={"epochs": 1})
    trainer = Trainer(load(raw, registry), tmp_path / "run", registry=registry, dataset=tiny_data)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    assert trainer.model.stack.plugins["decoder_only"].steps == trainer.steps_per_epoch
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert all(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert {"train.loss", "train.elbo", "train.kl"} <= set(record)


def test_train_step_is_refused_under_torchrun(registry, tiny_data, tmp_path, monkeypatch):
    from vaecore import distributed

    monkeypatch.setattr(distributed, "init_process_group", lambda device: distributed.ProcessGroup(rank=0, world=2))
    raw = tiny_config([{"name": "decoder_only"}])
    with pytest.raises(
        ConfigError, match="'decoder_only' takes over the training step, which is not supported under torchrun"
    ):
        Trainer(load(raw, registry), tmp_path / "run", registry=registry, dataset=tiny_data)


def test_on_epoch_end_can_stop_the_run(registry, tiny_data, tmp_path):
    raw = tiny_config(recorders({"stop_at_epoch": 2}), train={"epochs": 5})
    trainer, _ = run_training(raw, tmp_path / "run", tiny_data, registry)
    assert trainer.epoch == 2
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_hook_calls_per_step(registry, tiny_data, tmp_path):
    raw = tiny_config(recorders({}), train={"epochs": 1})
    trainer, _ = run_training(raw, tmp_path / "run", tiny_data, registry)
    calls = trainer.model.plugins["recorder"].calls
    steps = trainer.steps_per_epoch
    valid_batches = tiny_data.valid.num_batches(128)
    assert calls["on_step_end"] == steps
    assert calls["extra_loss"] == steps + valid_batches
    assert calls["setup"] == 1 and calls["on_epoch_end"] == 1 and calls["eval_metrics"] == 1


def test_posterior_type_survives_folding(registry, tiny_data):
    model = make_model(tiny_config(recorders({})), tiny_data, registry)
    posterior, features = model.encode(tiny_data.train.x[:3], model.context(training=False))
    assert isinstance(posterior, DiagonalGaussian) and features.shape == (3, 32)


class FailingSetup:
    api_version = 1

    @hookimpl
    def setup(self, info):
        raise RuntimeError("no GPU here")


def test_a_failing_setup_names_its_plugin(tiny_data):
    registry = make_registry({"failing": FailingSetup}, entry_points=False)
    with pytest.raises(PluginError, match="plugin 'failing' failed in setup: RuntimeError: no GPU here"):
        make_model(tiny_config([{"name": "failing"}]), tiny_data, registry)


def test_kl_weight_folds_in_config_order_and_is_the_weight_trained_and_logged(registry, tiny_data, tmp_path):
    stack = [{"name": "schedule", "id": "a", "factor": 0.5}, {"name": "schedule", "id": "b", "factor": 0.1}]
    raw = tiny_config(stack, train={"beta": 2.0, "kl_warmup": {"start": 0.5, "epochs": 1}}, eval={"nll_samples": 0})
    trainer, _ = run_training(raw, tmp_path / "run", tiny_data, registry)
    a, b = (trainer.model.stack.plugins[pid].seen for pid in ("a", "b"))
    steps = 2 * 8
    assert [s for s, _, _ in a] == list(range(steps)) and len(b) == steps  # training steps only
    for (step, received, returned), (_, received_b, returned_b) in zip(a, b):
        warm = min(1.0, 0.5 + 0.5 * step / 8)
        assert received == pytest.approx(2.0 * warm) and received_b == returned
        assert returned_b == pytest.approx(2.0 * warm * 0.05)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train.kl_weight"] for r in records] == pytest.approx([b[7][2], b[15][2]])
    # epoch 2 has no warm-up left: its loss is -rec + 0.1 KL, the weight the schedules gave
    last = records[-1]
    assert last["train.loss"] == pytest.approx(-last["train.rec"] + 0.1 * last["train.kl"], rel=1e-5)
    # validation uses weight 1
    assert last["valid.loss"] == pytest.approx(-last["valid.elbo"], rel=1e-5)


def test_a_non_finite_kl_weight_is_the_plugins_error(registry, tiny_data, tmp_path):
    raw = tiny_config([{"name": "schedule", "id": "bad", "factor": float("nan")}], eval={"nll_samples": 0})
    with pytest.raises(PluginError, match=r"plugin 'bad' failed in kl_weight: returned nan, not a finite number >= 0"):
        run_training(raw, tmp_path / "run", tiny_data, registry)


class _WritesContext:
    api_version = 2

    @hookimpl
    def pre_encode(self, x, ctx):
        ctx.kl_weight = 5.0


def test_the_context_is_read_only_to_plugins(tiny_data, tmp_path):
    from vaecore.plugin_manager import hook_failure

    registry = make_registry({"writer": _WritesContext}, entry_points=False)
    trainer = Trainer(
        load(tiny_config([{"name": "writer"}]), registry), tmp_path / "run", registry=registry, dataset=tiny_data
    )
    with pytest.raises(AttributeError) as err:
        trainer.fit()
    assert hook_failure(err.value).startswith(
        "plugin 'writer' failed in pre_encode: AttributeError: StepContext.kl_weight is read-only to plugins"
    )


class _Stash:
    """Stores each forward pass's y in latent_map and checks extra_loss sees that very pass's."""

    api_version = 2

    def __init__(self):
        self.checked = 0

    @hookimpl
    def latent_map(self, y, ctx):
        ctx.extras.of(self).setdefault("calls", []).append(y)

    @hookimpl
    def extra_loss(self, out, ctx):
        # exactly this pass's call, though another plugin's latent_map call came in between
        calls = out.extras.of(self)["calls"]
        assert len(calls) == 1 and calls[0] is out.y
        self.checked += 1
        return None


class _ReencodesBetween:
    """Calls the model's latent map (and encoder) from extra_loss, as NE's re-encoding does."""

    api_version = 2

    @hookimpl
    def extra_loss(self, out, ctx):
        ctx.model.latent_map(ctx.model.encode(out.x, ctx)[0].mean, ctx)
        return None


def test_extras_carry_one_forward_pass_from_a_hook_to_extra_loss(tiny_data, tmp_path):
    registry = make_registry({"reencode": _ReencodesBetween, "stash": _Stash}, entry_points=False)
    config = load(tiny_config([{"name": "reencode"}, {"name": "stash"}]), registry)
    trainer = Trainer(config, tmp_path / "run", registry=registry, dataset=tiny_data)
    trainer.fit()
    stash = trainer.model.stack.plugins["stash"]
    # 2 epochs x 8 training steps, 2 validations of 1 batch, and the final evaluation's passes
    assert stash.checked >= 18
