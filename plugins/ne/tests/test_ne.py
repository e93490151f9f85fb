"""Tests of the NE plugin: the maths, the plugin against the core, gradient paths, stacks, options."""

from __future__ import annotations

import json
import math

import attrs
import pytest
import torch
from torch import nn
from vaecore_ne import NEPlugin, buffers_restored, gaussian_nll, lp_loss, se_loss

import vaecore
from vaecore.distributions import DiagonalGaussian
from vaecore.errors import ConfigError, PluginError
from vaecore.testing import (
    binarized_mnist,
    load,
    make_model,
    make_registry,
    run_training,
    synthetic_dataset,
    tiny_config,
    train_steps,
)

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)  # 0.918939...


# ----------------------------------------------------------------------------------------------
# small plugins used to probe the stack


class Probe(nn.Module):
    """Records what its ``pre_encode`` receives and counts ``post_posterior`` calls in a buffer."""

    api_version = vaecore.HOOK_API_VERSION

    def __init__(self, options=None):
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    @vaecore.hookimpl
    def pre_encode(self, x):
        self.seen.append(x.detach().clone())

    @vaecore.hookimpl
    def post_posterior(self, posterior):
        self.calls += 1


class Double:
    """latent_map z = 2 y: decoded codes differ from the posterior's space."""

    api_version = vaecore.HOOK_API_VERSION

    @vaecore.hookimpl
    def latent_map(self, y):
        return 2.0 * y


def registry():
    return make_registry({"probe": Probe, "double": Double})


# a tiny PixelCNN decoder for the 4 x 4 images of synthetic_dataset(n, 16)
PIXELCNN = {"kind": "pixelcnn", "kernel_sizes": [3, 3], "width": 8, "z_channels": 2}
DECODERS = {"mlp": {}, "pixelcnn": PIXELCNN}


def ne_model(plugins, latent=4, dataset=None, decoder="mlp", **sections):
    dataset = dataset if dataset is not None else synthetic_dataset(64, 16)
    model_section = {"latent_dim": latent, **({"decoder": DECODERS[decoder]} if DECODERS[decoder] else {})}
    raw = tiny_config(plugins, model=model_section, **sections)
    return make_model(raw, dataset, registry()), dataset


def plugin_of(model, pid="ne") -> NEPlugin:
    return model.stack.plugins[pid]


# ----------------------------------------------------------------------------------------------
# maths against hand-computed values


def test_se_is_the_sum_of_squared_differences():
    z = torch.tensor([[1.0, 2.0, -1.0], [0.0, 0.0, 0.0]])
    z_hat = torch.tensor([[0.0, 4.0, -1.0], [3.0, 0.0, -0.5]])
    assert se_loss(z, z_hat).tolist() == pytest.approx([1.0 + 4.0 + 0.0, 9.0 + 0.0 + 0.25])


def test_gaussian_nll_hand_values():
    # -log N(1; 0, 1) = 0.5 + 0.5 log 2pi ; -log N(3; 1, e^2) = 0.5*4/e^2 + 1 + 0.5 log 2pi
    z = torch.tensor([1.0, 3.0, 0.0])
    loc = torch.tensor([0.0, 1.0, 0.0])
    log_var = torch.tensor([0.0, 2.0, -4.0])
    expected = [0.5 + HALF_LOG_2PI, 2.0 / math.e**2 + 1.0 + HALF_LOG_2PI, -2.0 + HALF_LOG_2PI]
    assert gaussian_nll(z, loc, log_var).tolist() == pytest.approx(expected)
    # agrees with torch.distributions
    ref = -torch.distributions.Normal(loc, log_var.mul(0.5).exp()).log_prob(z)
    assert torch.allclose(gaussian_nll(z, loc, log_var), ref)


# per-dimension terms of the fixture below: 1.418939, 0.918939, -1.081061 (sum 1.256817)
LP_Z = torch.tensor([[1.0, 0.0, 0.0]])
LP_LOC = torch.tensor([[0.0, 0.0, 0.0]])
LP_LOG_VAR = torch.tensor([[0.0, 0.0, -4.0]])
T1, T2, T3 = 0.5 + HALF_LOG_2PI, HALF_LOG_2PI, -2.0 + HALF_LOG_2PI


@pytest.mark.parametrize(
    ("cap", "expected"),
    [
        (-math.inf, T1 + T2 + T3),  # uncapped
        (-5.0, T1 + T2 + T3),  # c below every term, including the negative one: all kept
        (-1.0, T1 + T2),  # c above the negative term T3 = -1.081: T3 set to 0
        (0.0, T1 + T2),
        (1.0, T1),  # c above T2 = 0.919, below T1 = 1.419
        (T2, T1 + T2),  # c equal to a term: kept (eq. 9 zeroes only where c > -log p)
        (1.5, 0.0),  # c above every term: the loss is 0 (falls back to the plain VAE)
    ],
)
def test_lp_cap_against_hand_values(cap, expected):
    value = lp_loss(LP_Z, LP_LOC, LP_LOG_VAR, cap)
    assert value.shape == (1,)
    assert float(value) == pytest.approx(expected, abs=1e-6)


def test_lp_capped_dimensions_pass_no_gradient():
    loc = LP_LOC.clone().requires_grad_()
    log_var = LP_LOG_VAR.clone().requires_grad_()
    lp_loss(LP_Z, loc, log_var, cap=1.0).sum().backward()
    # only dimension 0 (T1 = 1.419 >= 1) is kept: d/dloc = -(z - loc)/var = -1, d/dlog_var = 0.5 (1 - (z-loc)^2/var) = 0
    assert loc.grad[0].tolist() == pytest.approx([-1.0, 0.0, 0.0])
    assert log_var.grad[0].tolist() == pytest.approx([0.0, 0.0, 0.0])


def test_lp_uncapped_rewards_shrinking_variance():
    # the paper's warning: without a cap, smaller variance always lowers the loss when z == mu_hat
    z = torch.zeros(1, 1)
    values = [float(lp_loss(z, z, torch.full((1, 1), lv), -math.inf)) for lv in (0.0, -2.0, -4.0, -8.0)]
    assert values == sorted(values, reverse=True)
    assert values[-1] == pytest.approx(-4.0 + HALF_LOG_2PI)


def test_buffers_restored_undoes_in_place_and_replaced_buffers():
    bn = nn.BatchNorm1d(3)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with buffers_restored(bn):
        bn(torch.randn(8, 3) + 5.0)
        bn.num_batches_tracked = torch.tensor(7)  # replaced rather than changed in place
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key
    with buffers_restored(bn, enabled=False):
        bn(torch.randn(8, 3) + 5.0)
    assert int(bn.num_batches_tracked) == 1
    assert float(bn.running_mean.mean()) > 0.3


# ----------------------------------------------------------------------------------------------
# the plugin on a model built by the core


def manual_reencoding(model, out, ctx, variant="se", target="mean", cap=0.0):
    """The re-encoding loss written out directly from the paper, for comparison."""
    k, b, d = out.y.shape
    x_hat = torch.sigmoid(model.decode(out.z)).reshape(k * b, -1)
    posterior, _ = model.encode(x_hat, ctx)
    y = out.y.reshape(k * b, d)
    if variant == "se":
        z_hat = posterior.loc if target == "mean" else posterior.rsample(1)[0][0]
        return ((y - z_hat) ** 2).sum(-1).mean()
    nll = 0.5 * ((y - posterior.loc) ** 2 / posterior.var + posterior.var.log() + math.log(2 * math.pi))
    return torch.where(nll >= cap, nll, torch.zeros_like(nll)).sum(-1).mean()


@pytest.mark.parametrize("samples", [1, 3])
@pytest.mark.parametrize(
    "options",
    [
        {"variant": "se", "target": "mean"},
        {"variant": "se", "target": "sample"},
        {"variant": "lp", "cap": 0.5},
        {"variant": "lp", "cap": -1.0},
    ],
)
def test_plugin_matches_the_paper_written_out(options, samples):
    model, data = ne_model([{"name": "ne", **options}])
    ctx = model.context(training=True)
    x = data.train.x[:10]
    out = model(x, ctx, samples)
    state = torch.get_rng_state()
    got = plugin_of(model).reencoding_loss(out, ctx)
    torch.set_rng_state(state)
    want = manual_reencoding(
        model, out, ctx, options["variant"], options.get("target", "sample"), options.get("cap", 0.0)
    )
    assert got.shape == ()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    terms = dict(model.stack.extra_loss(out, ctx))
    assert list(terms) == ["ne.reencode"]
    assert terms["ne.reencode"].weight == 1.0


def test_reencoding_goes_through_pre_encode_and_post_posterior_of_the_stack():
    model, data = ne_model([{"name": "probe"}, {"name": "ne", "target": "mean"}])
    probe = model.stack.plugins["probe"]
    ctx = model.context(training=True)
    x = data.train.x[:6]
    out = model(x, ctx)
    assert len(probe.seen) == 1 and int(probe.calls) == 1
    terms = dict(model.stack.extra_loss(out, ctx))
    assert len(probe.seen) == 2
    # the second encoder pass saw the decoder's mean for out.z, not the data
    assert torch.allclose(probe.seen[1], torch.sigmoid(out.params[0]).detach())
    assert not torch.equal(probe.seen[1], x)
    # the probe's counter buffer was incremented by the re-encoding and then restored
    assert int(probe.calls) == 1
    assert torch.isfinite(terms["ne.reencode"].value)


def test_update_stats_lets_the_reencoding_change_buffers():
    model, data = ne_model([{"name": "probe"}, {"name": "ne", "update_stats": True}])
    ctx = model.context(training=True)
    out = model(data.train.x[:6], ctx)
    model.stack.extra_loss(out, ctx)
    assert int(model.stack.plugins["probe"].calls) == 2


def test_with_a_latent_map_decodes_z_and_compares_in_posterior_space():
    model, data = ne_model([{"name": "double"}, {"name": "ne", "target": "mean"}])
    ctx = model.context(training=True)
    out = model(data.train.x[:8], ctx)
    assert torch.allclose(out.z, 2 * out.y)
    got = plugin_of(model).reencoding_loss(out, ctx)
    x_hat = torch.sigmoid(model.decode(2 * out.y[0]))
    posterior, _ = model.encode(x_hat, ctx)
    assert got.item() == pytest.approx(((out.y[0] - posterior.loc) ** 2).sum(-1).mean().item(), rel=1e-6)


def test_reconstruction_sample_reencodes_a_binary_sample():
    model, data = ne_model([{"name": "probe"}, {"name": "ne", "reconstruction": "sample"}])
    ctx = model.context(training=True)
    out = model(data.train.x[:8], ctx)
    plugin_of(model).reencoding_loss(out, ctx)
    x_hat = model.stack.plugins["probe"].seen[1]
    assert set(x_hat.unique().tolist()) <= {0.0, 1.0}


def test_lp_with_a_flow_posterior_is_refused_with_a_clear_message():
    class Flow:
        api_version = vaecore.HOOK_API_VERSION

        @vaecore.hookimpl
        def post_posterior(self, posterior):
            class NotGaussian:  # a Posterior, but neither a DiagonalGaussian nor one with a base
                mean = posterior.loc

                def rsample(self, k):
                    return posterior.rsample(k)

                def log_prob(self, y):
                    return posterior.log_prob(y)

                def kl_per_dim(self):
                    return None

            return NotGaussian()

    raw = tiny_config([{"name": "flow"}, {"name": "ne", "variant": "lp"}])
    reg = make_registry({"flow": Flow})
    data = synthetic_dataset(32, 16)
    model = make_model(raw, data, reg)
    ctx = model.context(training=True)
    loc_var = DiagonalGaussian(torch.zeros(2, 4), torch.ones(2, 4))
    y = loc_var.rsample(1)[0]
    from vaecore.model import ForwardOutput

    out = ForwardOutput(
        x=data.train.x[:2],
        posterior=loc_var,
        features=torch.zeros(2, 32),
        y=y,
        z=y,
        params=model.decode(y),
        log_px=torch.zeros(1, 2),
        log_py=torch.zeros(1, 2),
        log_qy=torch.zeros(1, 2),
        kl_per_dim=None,
    )
    with pytest.raises(
        PluginError, match="variant 'lp' needs a diagonal Gaussian posterior.*NotGaussian.*use variant 'se'"
    ):
        plugin_of(model).reencoding_loss(out, ctx)
    # se works with any posterior
    model.stack.plugins["ne"].options.variant = "se"
    assert torch.isfinite(plugin_of(model).reencoding_loss(out, ctx))


# ----------------------------------------------------------------------------------------------
# where the gradient flows


def grads_from_ne(options, decoder="mlp"):
    """Which parameter groups and which first-pass tensors receive gradient from the NE term alone."""
    model, data = ne_model([{"name": "ne", **options}], decoder=decoder)
    ctx = model.context(training=True)
    out = model(data.train.x[:16], ctx)
    value = plugin_of(model).reencoding_loss(out, ctx)
    if not value.requires_grad:
        return set()
    groups = {"encoder": list(model.encoder.parameters()), "decoder": list(model.decoder.parameters())}
    flat = [p for ps in groups.values() for p in ps]
    first_pass = [out.posterior.loc, out.posterior.var]
    grads = torch.autograd.grad(value, flat + first_pass, allow_unused=True)
    nonzero = [g is not None and float(g.abs().sum()) > 0 for g in grads]
    got = set()
    i = 0
    for name, ps in groups.items():
        if any(nonzero[i : i + len(ps)]):
            got.add(name)
        i += len(ps)
    if any(nonzero[i:]):
        got.add("code")  # the first encoder pass (z = mu + sigma * eps) gets NE gradient
    return got


@pytest.mark.parametrize(
    ("detach", "expected"),
    [
        ([], {"encoder", "decoder", "code"}),  # the default: eq. 6 differentiated through every path
        (["code"], {"encoder", "decoder"}),  # z is a fixed target; decoder and re-encoding learn
        (["reconstruction"], {"encoder", "code"}),  # the decoder is not trained by NE
        (["reencoded"], {"encoder", "code"}),  # z pulled towards a fixed z_hat: the path via x_hat is cut too
        (["code", "reconstruction"], {"encoder"}),  # only the re-encoding pass
        (["code", "reencoded"], set()),  # both ends fixed: nothing left to train
        (["reconstruction", "reencoded"], {"encoder", "code"}),  # only the first pass: z pulled to z_hat
        (["code", "reconstruction", "reencoded"], set()),
    ],
)
@pytest.mark.parametrize("decoder", ["mlp", "pixelcnn"])
def test_gradient_paths(detach, expected, decoder):
    # with a PixelCNN the path is drawn from p(x|z) without a graph; "mean" (the default) is
    # differentiable in z and the decoder through the parameters teacher-forced on that path
    assert grads_from_ne({"detach": detach, "target": "mean"}, decoder) == expected


def test_weight_zero_only_monitors():
    model, data = ne_model([{"name": "ne", "weight": 0.0}])
    ctx = model.context(training=True)
    out = model(data.train.x[:8], ctx)
    (term,) = [t for _, t in model.stack.extra_loss(out, ctx)]
    assert term.weight == 0.0 and not term.value.requires_grad
    assert float(term.value) > 0


@pytest.mark.parametrize("decoder", ["mlp", "pixelcnn"])
def test_reconstruction_sample_gives_the_decoder_no_gradient_with_bernoulli(decoder):
    # a Bernoulli sample is not reparameterised: the NE term cannot reach the decoder through it
    # (nor through a pixel-by-pixel draw, greedy or not)
    assert grads_from_ne({"reconstruction": "sample", "target": "mean"}, decoder) == {"encoder", "code"}
    if decoder == "pixelcnn":
        options = {"reconstruction": "sample", "decoding": "greedy", "target": "mean"}
        assert grads_from_ne(options, decoder) == {"encoder", "code"}


# ----------------------------------------------------------------------------------------------
# an autoregressive decoder: x_hat is decoded from z alone

DETACH_SETS = [
    [],
    ["code"],
    ["reconstruction"],
    ["reencoded"],
    ["code", "reconstruction"],
    ["code", "reencoded"],
    ["reconstruction", "reencoded"],
    ["code", "reconstruction", "reencoded"],
]


def ar_entry(detach=(), reconstruction="mean", decoding=None, **extra):
    """An ne entry for the PixelCNN tests; ``decoding=None`` leaves the option at its default."""
    entry = {"name": "ne", "detach": list(detach), "reconstruction": reconstruction, **extra}
    if decoding is not None:
        entry["decoding"] = decoding
    return entry


def reencoded_input(model, out, ctx, seed):
    """The x_hat the NE term re-encodes (what the second pre_encode sees), under a fixed seed."""
    probe = model.stack.plugins["probe"]
    torch.manual_seed(seed)
    plugin_of(model).reencoding_loss(out, ctx)
    return probe.seen[-1]


def ar_setup(entry, n=16):
    model, data = ne_model([{"name": "probe"}, entry], decoder="pixelcnn")
    assert model.autoregressive
    with torch.no_grad():  # sharpen the untrained decoder: its outputs then depend clearly on x_<i
        for param in model.decoder.parameters():
            param.mul_(3.0)
    ctx = model.context(training=True)
    x = data.train.x[:n]
    torch.manual_seed(0)
    out = model(x, ctx)
    return model, ctx, out


def with_other_input(model, out, x):
    """The same codes (same y, z, posterior) as ``out``, with another input and its teacher-forced
    parameters: what a forward pass on ``x`` would give had it drawn the same z."""
    params = model.decode(out.z, x)
    return attrs.evolve(out, x=x, params=params, log_px=model.likelihood.log_prob(x, params))


@pytest.mark.parametrize("decoding", [None, "greedy"])
@pytest.mark.parametrize("reconstruction", ["mean", "sample"])
@pytest.mark.parametrize("detach", DETACH_SETS)
def test_pixelcnn_x_hat_for_a_fixed_z_does_not_change_with_x(detach, reconstruction, decoding):
    model, ctx, out = ar_setup(ar_entry(detach, reconstruction, decoding))
    other = with_other_input(model, out, 1.0 - out.x)
    assert not torch.allclose(other.params, out.params)  # the teacher-forced parameters follow x
    first = reencoded_input(model, out, ctx, seed=3)
    second = reencoded_input(model, other, ctx, seed=3)
    assert torch.equal(first, second)


@pytest.mark.parametrize("decoding", [None, "greedy"])
@pytest.mark.parametrize("reconstruction", ["mean", "sample"])
def test_pixelcnn_every_detach_reencodes_the_same_x_hat(reconstruction, decoding):
    model, ctx, out = ar_setup(ar_entry([], reconstruction, decoding))
    reference = reencoded_input(model, out, ctx, seed=5)
    for detach in DETACH_SETS[1:]:
        plugin_of(model).options.detach = detach
        assert torch.allclose(reencoded_input(model, out, ctx, seed=5), reference, atol=1e-6), detach


@pytest.mark.parametrize("decoding", [None, "greedy"])
def test_pixelcnn_mean_and_sample_agree_on_the_path(decoding):
    """Under one seed, "sample" re-encodes the path drawn from p(x|z) (``VAE.generate``) and
    "mean" the per-pixel conditional means along that same path."""
    model, ctx, out = ar_setup(ar_entry([], "sample", decoding))
    path = reencoded_input(model, out, ctx, seed=7)
    torch.manual_seed(7)
    expected, _ = model.generate(out.z, greedy=decoding == "greedy")
    assert torch.equal(path, expected.reshape(path.shape))
    assert set(path.unique().tolist()) <= {0.0, 1.0}
    plugin_of(model).options.reconstruction = "mean"
    means = reencoded_input(model, out, ctx, seed=7)
    teacher_forced_on_path = torch.sigmoid(model.decode(out.z, expected)).reshape(means.shape)
    assert torch.allclose(means, teacher_forced_on_path, atol=1e-6)
    assert not torch.allclose(means, torch.sigmoid(out.params).reshape(means.shape))  # not the data's


@pytest.mark.parametrize("reconstruction", ["mean", "sample"])
def test_pixelcnn_greedy_is_deterministic_and_sample_is_random(reconstruction):
    model, ctx, out = ar_setup(ar_entry([], reconstruction, "greedy"), n=16)
    greedy = [reencoded_input(model, out, ctx, seed=s) for s in (0, 1)]
    assert torch.equal(greedy[0], greedy[1])
    plugin_of(model).options.decoding = "sample"
    drawn = [reencoded_input(model, out, ctx, seed=s) for s in (0, 1)]
    assert not torch.equal(drawn[0], drawn[1])


@pytest.mark.parametrize("detach", [[], ["code"]])
def test_pixelcnn_teacher_forced_approximation_is_the_old_behaviour(detach):
    """The cheap non-default option re-encodes the parameters teacher-forced on the data: x_hat
    then follows x (its bias), for every detach value alike."""
    model, ctx, out = ar_setup(ar_entry(detach, "mean", "teacher_forced_approximation"))
    x_hat = reencoded_input(model, out, ctx, seed=0)
    assert torch.allclose(x_hat, torch.sigmoid(out.params).reshape(x_hat.shape), atol=1e-6)
    other = with_other_input(model, out, 1.0 - out.x)
    assert not torch.allclose(reencoded_input(model, other, ctx, seed=0), x_hat)


def test_pixelcnn_ne_trains_through_the_core():
    raw = tiny_config([{"name": "ne"}], model={"decoder": PIXELCNN}, train={"batch_size": 16})
    result = train_steps(raw, synthetic_dataset(64, 16), steps=2)
    assert result.model.autoregressive
    for key in ("train.ne.reencode", "valid.ne.reencode"):
        assert math.isfinite(result.metrics[key]) and result.metrics[key] > 0


# ----------------------------------------------------------------------------------------------
# against the core: training, logging, resume


FAST_EVAL = {"nll_samples": 0, "probes": False}


def train(raw, run_dir, dataset, registry=None, resume=False):
    """``run_training`` with a cheap final evaluation (these tests read ``metrics.jsonl``)."""
    raw = {**raw, "eval": {**raw.get("eval", {}), **FAST_EVAL}}
    return run_training(raw, run_dir, dataset, registry, resume=resume)


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def mnist():
    """The first 500/200/100 images of the shipped binarized MNIST, loaded once for the module."""
    return binarized_mnist(500, 200, 100)


def test_training_logs_the_term_and_adds_it_to_the_loss(tmp_path, mnist):
    data = mnist
    raw = tiny_config([{"name": "ne", "weight": 0.5}], train={"epochs": 2})
    train(raw, tmp_path / "run", data)
    records = read_metrics(tmp_path / "run")
    assert len(records) == 2
    for rec in records:
        assert rec["train.ne.reencode"] > 0 and rec["valid.ne.reencode"] > 0
        # no warm-up, beta 1: loss = -elbo + 0.5 * reencode, batch by batch, hence for the epoch means
        assert rec["train.loss"] == pytest.approx(-rec["train.elbo"] + 0.5 * rec["train.ne.reencode"], rel=1e-5)
        assert rec["valid.loss"] == pytest.approx(-rec["valid.elbo"] + 0.5 * rec["valid.ne.reencode"], rel=1e-5)


def test_training_with_ne_lowers_the_reencoding_error(tmp_path, mnist):
    """The hook takes effect: the same run with weight 1 ends with a lower re-encoding error than
    with weight 0 (which only monitors it)."""
    data = mnist
    finals = {}
    for weight in (0.0, 1.0):
        raw = tiny_config([{"name": "ne", "weight": weight}], model={"latent_dim": 8}, train={"epochs": 3, "lr": 3e-3})
        train(raw, tmp_path / f"w{weight}", data)
        finals[weight] = read_metrics(tmp_path / f"w{weight}")[-1]["valid.ne.reencode"]
    # measured: 3.05 with NE, 11.3 without (the plain VAE's collapsing units re-encode to noise)
    assert finals[1.0] < 0.5 * finals[0.0]


@pytest.mark.parametrize("decoder", ["mlp", "pixelcnn"])
def test_monitor_only_entry_leaves_training_unchanged(tmp_path, decoder):
    """weight 0 with target and reconstruction "mean" (and, with an autoregressive decoder, greedy
    decoding) draws no random numbers and adds no gradient: the run equals the plain VAE's, plus
    the logged re-encoding error."""
    data = synthetic_dataset(128, 16)
    monitor = {"name": "ne", "weight": 0.0, "target": "mean", "decoding": "greedy"}
    model = {"decoder": PIXELCNN} if decoder == "pixelcnn" else {}
    train(tiny_config([], model=model, train={"epochs": 2}), tmp_path / "plain", data)
    train(tiny_config([monitor], model=model, train={"epochs": 2}), tmp_path / "monitor", data)
    for plain, mon in zip(read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "monitor")):
        assert mon.pop("train.ne.reencode") > 0 and mon.pop("valid.ne.reencode") > 0
        plain.pop("seconds"), mon.pop("seconds")
        assert plain == mon


def test_resume_equals_an_uninterrupted_run(tmp_path):
    data = synthetic_dataset(128, 16)
    raw = tiny_config([{"name": "ne", "reconstruction": "sample"}], train={"epochs": 2, "batch_size": 16})
    train(raw, tmp_path / "full", data)
    one = tiny_config([{"name": "ne", "reconstruction": "sample"}], train={"epochs": 1, "batch_size": 16})
    train(one, tmp_path / "split", data)
    train(raw, tmp_path / "split", data, resume=True)
    full, split = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "split")
    for a, b in zip(full, split):
        a.pop("seconds"), b.pop("seconds")
        assert a == b


# ----------------------------------------------------------------------------------------------
# options


def config_error(plugins):
    with pytest.raises(ConfigError) as info:
        load(tiny_config(plugins))
    return info.value.problems


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"variant": "kl"}, "plugins[0].variant: must be one of 'se', 'lp', got 'kl'"),
        ({"weight": -1.0}, "plugins[0].weight: must be >= 0, got -1.0"),
        ({"weight": "big"}, "plugins[0].weight: expected a number, got 'big'"),
        ({"cap": math.nan}, "plugins[0].cap: must be a number or -inf, got nan"),
        ({"reconstruction": "mode"}, "plugins[0].reconstruction: must be one of 'mean', 'sample', got 'mode'"),
        ({"target": "mode"}, "plugins[0].target: must be one of 'sample', 'mean', got 'mode'"),
        (
            {"decoding": "teacher_forced"},
            "plugins[0].decoding: must be one of 'sample', 'greedy', 'teacher_forced_approximation', "
            "got 'teacher_forced'",
        ),
        (
            {"detach": ["decoder"]},
            "plugins[0].detach: must be one of 'code', 'reconstruction', 'reencoded', got 'decoder'",
        ),
        ({"detach": "code"}, "plugins[0].detach: expected a list of strings, got 'code'"),
        ({"detach": ["code", "code"]}, "plugins[0]: detach: lists 'code' more than once"),
        ({"update_stats": 1}, "plugins[0].update_stats: expected true or false, got 1"),
        ({"gamma": 1.0}, "plugins[0].gamma: unknown key"),
        (
            {"variant": "lp", "target": "mean"},
            "plugins[0]: target: applies to variant 'se' only; 'lp' scores z under the re-encoded posterior "
            "N(mu_hat, sigma_hat^2), not against one re-encoded code",
        ),
    ],
)
def test_bad_options_name_their_path(entry, problem):
    problems = config_error([{"name": "ne", **entry}])
    assert len(problems) == 1
    assert problems[0].startswith(problem)


def test_every_bad_option_is_reported_at_once_with_its_entry():
    problems = config_error([{"name": "ne"}, {"name": "ne", "weight": -2.0, "variant": "x"}])
    assert problems == [
        "plugins[1].variant: must be one of 'se', 'lp', got 'x'",
        "plugins[1].weight: must be >= 0, got -2.0",
    ]


def test_good_options_including_a_negative_and_an_infinite_cap():
    config = load(tiny_config([{"name": "ne", "variant": "lp", "cap": -3.0}, {"name": "ne", "cap": -math.inf}]))
    assert [e.id for e in config.plugins] == ["ne1", "ne2"]
    assert config.plugins[0].options.cap == -3.0
    assert config.plugins[1].options.cap == -math.inf
    defaults = load(tiny_config([{"name": "ne"}])).plugins[0].options
    assert (defaults.variant, defaults.weight, defaults.cap, defaults.reconstruction, defaults.target) == (
        "se",
        1.0,
        0.0,
        "mean",
        "sample",
    )
    assert defaults.detach == [] and defaults.update_stats is False
    assert defaults.decoding == "sample"


# ----------------------------------------------------------------------------------------------
# in stacks with the other method plugins


def installed(*names):
    available = make_registry().names()
    missing = [n for n in names if n not in available]
    if missing:
        pytest.skip(f"plugin(s) {', '.join(missing)} not installed (pip install -e plugins/<name>)")


def test_stack_du_renyi_ne_trains_and_reencoding_does_not_feed_batchnorm(tmp_path):
    installed("du", "renyi")
    data = synthetic_dataset(96, 16)
    steps = 2 * 96 // 32
    counts = {}
    for update in (False, True):
        raw = tiny_config(
            [
                {"name": "du", "gamma": 0.8, "drop": 0.2},
                {"name": "renyi", "alpha": 0.5, "samples": 3},
                {"name": "ne", "update_stats": update},
            ],
            train={"epochs": 2},
        )
        trainer, _ = train(raw, tmp_path / f"u{update}", data)
        records = read_metrics(tmp_path / f"u{update}")
        for rec in records:
            assert all(math.isfinite(v) for v in rec.values() if isinstance(v, float))
            assert rec["train.ne.reencode"] > 0 and rec["valid.ne.reencode"] > 0
        counts[update] = int(trainer.model.plugins["du"].bn.num_batches_tracked)
    # each training step feeds DU's batch norm once with data (K samples share one posterior);
    # with update_stats the reconstructions (K * B of them) feed it a second time
    assert counts == {False: steps, True: 2 * steps}


def test_reencoding_leaves_du_batchnorm_as_the_data_pass_left_it():
    installed("du")
    model, data = ne_model([{"name": "du"}, {"name": "ne"}])
    ctx = model.context(training=True)
    bn = model.plugins["du"].bn
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    out = model(data.train.x[:16], ctx)
    after_data = {k: v.clone() for k, v in bn.state_dict().items()}
    ((_, term),) = model.stack.extra_loss(out, ctx)
    assert int(after_data["num_batches_tracked"]) == 1
    assert not torch.equal(after_data["running_mean"], before["running_mean"])
    for key, value in bn.state_dict().items():
        assert torch.equal(value, after_data[key]), key
    # the restore happened after the re-encoding's graph was built: backward still works
    (term.value - out.log_px.mean()).backward()
    assert bn.weight.grad is not None and float(bn.weight.grad.abs().sum()) > 0


def test_stack_with_intel_latent_map(tmp_path):
    installed("intel")
    data = synthetic_dataset(64, 16)
    raw = tiny_config(
        [{"name": "intel", "mapping": "circle"}, {"name": "ne", "variant": "lp", "cap": -1.0}], train={"epochs": 1}
    )
    train(raw, tmp_path / "run", data)
    (rec,) = read_metrics(tmp_path / "run")
    assert math.isfinite(rec["train.ne.reencode"]) and math.isfinite(rec["valid.ne.reencode"])


def test_stack_with_an_iaf_posterior_needs_se(tmp_path):
    installed("iaf")
    data = synthetic_dataset(64, 16)
    raw = tiny_config([{"name": "iaf"}, {"name": "ne", "variant": "lp"}], train={"epochs": 1})
    with pytest.raises(PluginError, match="variant 'lp' needs a diagonal Gaussian posterior.*use variant 'se'"):
        train(raw, tmp_path / "lp", data)
    raw = tiny_config([{"name": "iaf"}, {"name": "ne", "variant": "se"}], train={"epochs": 1})
    train(raw, tmp_path / "se", data)
    (rec,) = read_metrics(tmp_path / "se")
    assert rec["train.ne.reencode"] > 0
