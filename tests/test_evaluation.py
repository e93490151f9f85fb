"""evaluate(), the end of training and `vaecore eval` on real models: closed-form cases (a linear
Gaussian model whose log p(x) is exact, a posterior equal to the prior), chunking, determinism,
plugins' metrics and flow posteriors, probes, and the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torchmetrics

import vaecore
from vaecore.cli import main
from vaecore.config import EvalConfig
from vaecore.data import Dataset, Split
from vaecore.distributions import DiagonalGaussian
from vaecore.errors import ConfigError
from vaecore.evaluation import evaluate, log_likelihood
from vaecore.testing import make_model, make_registry, run_training, synthetic_dataset, tiny_config

# A linear-Gaussian model: z ~ N(0, I_2), x = W z + b + sigma * eps in R^3. With W^T W diagonal the
# exact posterior is a diagonal Gaussian, and p(x) = N(b, W W^T + sigma^2 I) is known exactly.
W = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
B = torch.tensor([0.5, -1.0, 0.2])
SIGMA = 0.5


def linear_gaussian_data(n: int = 300, seed: int = 0) -> Dataset:
    gen = torch.Generator().manual_seed(seed)

    def split() -> Split:
        z = torch.randn(n, 2, generator=gen)
        return Split(z @ W.T + B + SIGMA * torch.randn(n, 3, generator=gen))

    return Dataset("linear_gaussian", split(), split(), split(), binary=False)


def exact_log_px(x: torch.Tensor) -> torch.Tensor:
    cov = (W @ W.T + SIGMA**2 * torch.eye(3)).double()
    return torch.distributions.MultivariateNormal(B.double(), cov).log_prob(x.double())


def linear_gaussian_model(data: Dataset, loc_scale: float = 1.0, log_var_shift: float = 0.0):
    raw = tiny_config(
        model={
            "latent_dim": 2,
            "encoder": {"hidden": []},
            "decoder": {"hidden": []},
            "likelihood": {"kind": "gaussian", "scale": SIGMA},
        }
    )
    model = make_model(raw, data, make_registry(entry_points=False))
    precision = torch.eye(2) + W.T @ W / SIGMA**2  # diagonal: diag(17, 5)
    post_cov = torch.linalg.inv(precision)
    a = post_cov @ W.T / SIGMA**2
    with torch.no_grad():
        head = model.encoder.head
        head.weight.zero_()
        head.bias.zero_()
        head.weight[:2] = a * loc_scale
        head.bias[:2] = -(a @ B) * loc_scale
        head.bias[2:] = torch.diagonal(post_cov).log() + log_var_shift
        (decoder,) = list(model.decoder.net)
        decoder.weight.copy_(W)
        decoder.bias.copy_(B)
    return model


def cfg(**kw) -> EvalConfig:
    return EvalConfig(**{"probes": False, **kw})


def test_nll_is_exact_when_the_posterior_is_exact():
    data = linear_gaussian_data()
    model = linear_gaussian_model(data)
    expected = -float(exact_log_px(data.test.x).mean())
    for k, chunk in ((1, 1), (10, 3), (200, 64)):
        res = evaluate(model, data.test, cfg(nll_samples=k, nll_chunk=chunk))
        assert res["nll"] == pytest.approx(expected, abs=2e-4)
        # The ELBO is tight too (its one-sample reconstruction term is Monte Carlo: 300 rows).
        assert -res["elbo"] == pytest.approx(expected, abs=0.1)
        assert res["nll_stderr"] > 0 and res["nll_samples"] == k


def test_nll_converges_to_the_exact_value_from_above_as_k_grows():
    data = linear_gaussian_data()
    model = linear_gaussian_model(data, loc_scale=0.6, log_var_shift=0.8)  # a poor proposal
    x = data.test.x
    exact = exact_log_px(x)
    gaps = {}
    with torch.no_grad():
        for k in (1, 10, 100, 1000, 5000):
            torch.manual_seed(k)
            est = log_likelihood(model, x, k, chunk=500)
            gaps[k] = float((exact - est).mean())  # nll_K - exact nll
            # per example the estimator's error is noise around a positive bias; its mean is
            # never below zero by more than a few standard errors
            err = exact - est
            assert gaps[k] > -3 * float(err.std()) / math.sqrt(len(err))
    assert gaps[1] > gaps[10] > gaps[100] > gaps[1000] > -0.01
    assert gaps[1] > 0.3 and gaps[5000] < 0.02
    # with K = 1 the estimator is an unbiased estimate of the negative ELBO
    res = evaluate(model, data.test, cfg(nll_samples=1))
    assert res["nll"] == pytest.approx(-res["elbo"], abs=5 * res["nll_stderr"])


def test_chunked_nll_equals_unchunked():
    data = linear_gaussian_data()
    exact_model = linear_gaussian_model(data)
    x = data.test.x[:50]
    with torch.no_grad():
        one = log_likelihood(exact_model, x, 300, chunk=300)
        many = log_likelihood(exact_model, x, 300, chunk=7)
    torch.testing.assert_close(one, many, rtol=0, atol=1e-5)
    # a poor proposal: same estimator, chunking changes only which samples are drawn
    model = linear_gaussian_model(data, loc_scale=0.6, log_var_shift=0.8)
    a = evaluate(model, data.test, cfg(nll_samples=400, nll_chunk=400))
    b = evaluate(model, data.test, cfg(nll_samples=400, nll_chunk=37))
    assert a["nll"] == pytest.approx(b["nll"], abs=4 * math.hypot(a["nll_stderr"], b["nll_stderr"]) / 10)


def prior_posterior_model(n: int = 2000):
    data = synthetic_dataset(n=n, dim=16)
    model = make_model(tiny_config(), data, make_registry(entry_points=False))
    with torch.no_grad():
        model.encoder.head.weight.zero_()
        model.encoder.head.bias.zero_()
    return data, model


def test_posterior_equal_to_the_prior_gives_no_information():
    data, model = prior_posterior_model()
    res = evaluate(model, data.test, cfg(nll_samples=20))
    d = model.latent_dim
    assert res["au"] == 0 and res["pca_components"] == 0
    assert max(res["activity"]) == 0
    assert abs(res["mi_batch"]) < 0.1 and abs(res["mi_split"]) < 0.1
    assert res["kl"] == 0 and res["kl_per_dim"] == [0.0] * d
    assert res["mpd"] == pytest.approx(0.0, abs=1e-9)
    assert res["cond_entropy"] == pytest.approx(0.5 * d * math.log(2 * math.pi * math.e), rel=1e-6)
    # y ~ N(0, I) re-encodes to mean 0: the error is E|y|^2 = d up to Monte Carlo noise
    assert res["reencoding_error"] == pytest.approx(d, rel=0.1)
    # q = p: every importance weight is p(x|z); the NLL is at most the ELBO's
    assert res["nll"] <= -res["elbo"] + 1e-4


def test_reencoding_can_be_skipped_without_changing_the_rest():
    data = synthetic_dataset(n=256)
    model = make_model(tiny_config(), data, make_registry(entry_points=False))
    full = evaluate(model, data.test, EvalConfig(nll_samples=10))
    skipped = evaluate(model, data.test, EvalConfig(nll_samples=10, reencoding=False))
    assert full["reencoding_error"] > 0
    assert skipped["reencoding_error"] is None and skipped["reencoding_error_per_dim"] is None
    assert {k: v for k, v in skipped.items() if not k.startswith("reencoding")} == {
        k: v for k, v in full.items() if not k.startswith("reencoding")
    }


def test_results_have_every_key_and_are_deterministic():
    data = synthetic_dataset(n=256)
    model = make_model(tiny_config(), data, make_registry(entry_points=False))
    state = torch.get_rng_state()
    a = evaluate(model, data.test, EvalConfig(nll_samples=30, nll_chunk=8), probe_split=data.train)
    assert torch.equal(state, torch.get_rng_state()), "evaluate must not consume the caller's RNG"
    b = evaluate(model, data.test, EvalConfig(nll_samples=30, nll_chunk=8), probe_split=data.train)
    assert a == b
    expected = {
        "nll",
        "iwae_bound",
        "elbo",
        "rec",
        "kl",
        "kl_per_dim",
        "mi_batch",
        "mi_split",
        "au",
        "activity",
        "reencoding_error",
        "mpd",
        "cond_entropy",
        "pca_components",
        "hoyer",
        "hoyer_g_y",
        "probe_g_mean",
        "probe_g_mean_var",
        "probe_g_y",
    }
    assert expected <= set(a)
    assert a["iwae_bound"] == -a["nll"]
    assert len(a["activity"]) == len(a["kl_per_dim"]) == model.latent_dim
    assert a["au"] == sum(v > 0.01 for v in a["activity"])
    assert a["elbo"] == pytest.approx(a["rec"] - a["kl"])
    assert a["nll"] <= -a["elbo"] + 3 * a["nll_stderr"]
    json.dumps(a)  # JSON-ready
    assert model.training, "the model's mode is restored"
    c = evaluate(model, data.test, EvalConfig(nll_samples=0, seed=1), probe_split=data.train)
    assert "nll" not in c and c["elbo"] != a["elbo"]


def test_no_probes_without_labels():
    data = synthetic_dataset(n=128, labels=False)
    model = make_model(tiny_config(), data, make_registry(entry_points=False))
    res = evaluate(model, data.test, EvalConfig(nll_samples=2), probe_split=data.train)
    assert not any(k.startswith("probe_") for k in res)


class FlowPosterior:
    """A flow-like posterior: y = 2 * y0 + 1 with y0 from a Gaussian base."""

    def __init__(self, base: DiagonalGaussian):
        self.base = base

    @property
    def mean(self) -> torch.Tensor:
        return 2 * self.base.loc + 1

    def rsample(self, k):
        y0, log_q0 = self.base.rsample(k)
        return 2 * y0 + 1, log_q0 - y0.shape[-1] * math.log(2)

    def log_prob(self, y):
        return self.base.log_prob((y - 1) / 2) - y.shape[-1] * math.log(2)

    def kl_per_dim(self):
        return None


class Flowish:
    api_version = vaecore.HOOK_API_VERSION

    @vaecore.hookimpl
    def post_posterior(self, posterior):
        return FlowPosterior(posterior)

    @vaecore.hookimpl
    def eval_metrics(self, model, split):
        return {"rows": float(len(split)), "draw": float(torch.rand(()))}


def test_flow_posterior_uses_its_base_and_plugin_metrics_are_namespaced():
    data = synthetic_dataset(n=256)
    registry = make_registry({"flowish": Flowish}, entry_points=False)
    model = make_model(tiny_config(plugins=[{"name": "flowish", "id": "fl"}]), data, registry)
    res = evaluate(model, data.test, EvalConfig(nll_samples=5, probes=False))
    assert res["fl.rows"] == len(data.test)
    assert res["kl_per_dim"] is None  # no analytic KL: the Monte Carlo KL is used
    ref = make_model(tiny_config(), data, make_registry(entry_points=False))
    ref.load_state_dict(model.state_dict())
    base = evaluate(ref, data.test, EvalConfig(nll_samples=5, probes=False))
    # Gaussian metrics are the base's; AU uses the flow's mean (2 * base mean + 1: 4x the variance)
    assert res["mpd"] == pytest.approx(base["mpd"], rel=1e-6)
    assert res["cond_entropy"] == pytest.approx(base["cond_entropy"], rel=1e-6)
    assert res["activity"] == pytest.approx([4 * a for a in base["activity"]], rel=1e-4)
    # the analysis commands' activity is the same as AU's: the flow's mean, not its base's
    from vaecore.analysis.commands import posterior_means

    assert posterior_means(model, data.test).double().var(0).tolist() == pytest.approx(res["activity"], rel=1e-4)
    again = evaluate(model, data.test, EvalConfig(nll_samples=5, probes=False))
    assert again["fl.draw"] == res["fl.draw"]


def test_training_ends_with_the_evaluation(tmp_path):
    data = synthetic_dataset(n=512)
    raw = tiny_config(train={"epochs": 15, "lr": 3e-3}, eval={"nll_samples": 500, "train_nll_samples": 20})
    _, res = run_training(raw, tmp_path / "run", data, make_registry(entry_points=False))
    assert res["nll_samples"] == 20
    written = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert written["nll"] == pytest.approx(res["nll"]) and written["split"] == "test"
    # 4 prototypes: a few epochs make them linearly decodable from the posterior mean
    assert res["probe_g_mean"] > 0.8 and res["probe_g_mean_var"] > 0.8
    assert res["au"] >= 1 and res["mi_split"] > 0.3


def test_cli_eval_writes_its_own_file_per_checkpoint_split_and_k(tmp_path, capsys):
    data = synthetic_dataset(n=256)
    npz = tmp_path / "synthetic.npz"
    np.savez(
        npz, **{f"{k}_{s}": getattr(data.split(s), k).numpy() for s in ("train", "valid", "test") for k in ("x", "y")}
    )
    run = tmp_path / "run"
    raw = tiny_config(train={"epochs": 1}, eval={"nll_samples": 5}, data={"name": "npz", "path": str(npz)})
    run_training(raw, run, data, make_registry(entry_points=False))
    at_training_end = (run / "eval.json").read_text()
    code = main(["eval", str(run), "--nll-samples", "7", "--split", "valid", "--set", "eval.au_threshold=0.5"])
    assert code == 0
    assert (run / "eval.json").read_text() == at_training_end  # never overwritten
    res = json.loads((run / "evals" / "best-valid-k7.json").read_text())
    assert res["nll_samples"] == 7 and res["split"] == "valid" and res["checkpoint"].endswith("best.pt")
    assert res["au"] == sum(a > 0.5 for a in res["activity"])
    out = capsys.readouterr().out
    assert "mi_split" in out and "nll" in out
    code = main(["eval", str(run), "--checkpoint", str(run / "checkpoints" / "last.pt"), "--nll-samples", "0"])
    assert code == 0 and json.loads((run / "evals" / "last-test-k0.json").read_text())["checkpoint"] == "last.pt"
    assert "wrote " + str(run / "evals" / "last-test-k0.json") in capsys.readouterr().out
    assert main(["eval", str(run), "--set", "eval.nll_chunk=0"]) == 2
    assert "eval.nll_chunk: must be > 0, got 0" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nowhere")]) != 0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("nll_samples", -1, "eval.nll_samples: must be >= 0, got -1"),
        ("mi_batch_size", 1, "eval.mi_batch_size: must be > 1, got 1"),
        ("au_threshold", 0.0, "eval.au_threshold: must be > 0, got 0.0"),
        ("probe_split", "dev", "eval.probe_split: must be one of 'train', 'valid', 'test', got 'dev'"),
    ],
)
def test_bad_eval_options(key, value, message):
    from vaecore.testing import load

    with pytest.raises(ConfigError) as info:
        load(tiny_config(eval={key: value}), make_registry(entry_points=False))
    assert message in str(info.value)


def test_importance_sampling_memory_is_bounded_whatever_k():
    """Every decoder call of the NLL sees at most nll_batch_size * nll_chunk latent codes."""
    data = synthetic_dataset(n=256)
    model = make_model(tiny_config(), data, make_registry(entry_points=False))
    seen: list[int] = []
    decode = model.decode

    def counting_decode(z, *args, **kwargs):
        seen.append(z.reshape(-1, z.shape[-1]).shape[0])
        return decode(z, *args, **kwargs)

    model.decode = counting_decode
    for k in (10, 3000):
        seen.clear()
        res = evaluate(model, data.test, EvalConfig(nll_samples=k, nll_chunk=40, nll_batch_size=16, probes=False))
        assert res["nll_samples"] == k
        assert max(seen) <= 40 * 16
    assert sum(seen) >= 3000 * len(data.test)  # every sample of every example was decoded


class _SquaredMeanNorm(torchmetrics.Metric):
    """Mean over examples of |posterior mean|^2, and the batches it saw."""

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.seen: list[torch.Tensor] = []

    def update(self, batch, out):
        assert torch.equal(out.x, batch.x)
        self.seen.append(batch.index)
        self.total += out.posterior.mean.pow(2).sum().double()
        self.n += batch.x.shape[0]

    def compute(self):
        return self.total / self.n


class _MetricPlugin:
    api_version = vaecore.HOOK_API_VERSION

    def __init__(self):
        self.metric = _SquaredMeanNorm()

    @vaecore.hookimpl
    def eval_metrics(self, model, split, ctx):
        return {"sq_norm": self.metric, "constant": 3.0}


def test_plugin_metrics_are_fed_from_the_core_pass():
    """A Metric returned by eval_metrics is updated once per batch of the core's pass, in order,
    and reported by compute(); the value equals the same mean computed from the encoder directly;
    the core's numbers are those of an evaluation without the plugin."""
    data = synthetic_dataset(n=200)
    registry = make_registry({"metric": _MetricPlugin})
    model = make_model(tiny_config([{"name": "metric"}]), data, registry)
    plain = make_model(tiny_config(), data)
    plain.load_state_dict(model.state_dict())
    cfg = EvalConfig(nll_samples=5, nll_chunk=5, probes=False)
    result = evaluate(model, data.test, cfg, batch_size=16)
    plugin = model.stack.plugins["metric"]
    assert [len(i) for i in plugin.metric.seen] == [16, 16, 16, 2]
    assert torch.equal(torch.cat(plugin.metric.seen), torch.arange(50))
    model.eval()
    with torch.no_grad():
        means = model.encode(data.test.x, model.context(training=False))[0].mean
    assert result["metric.sq_norm"] == pytest.approx(float(means.pow(2).sum(-1).mean()), rel=1e-6)
    assert result["metric.constant"] == 3.0
    reference = evaluate(plain, data.test, cfg, batch_size=16)
    assert {k: v for k, v in result.items() if not k.startswith("metric.")} == reference
