"""Evaluation of a trained model on a split: every diagnostic of the papers, and the plugins' own.

:func:`evaluate` streams the split once through the :mod:`vaecore.metrics` metrics (plus a pass
over the probe-training split when the data has labels) and returns plain JSON-ready values under
the ``eval.json`` keys::

    nll, iwae_bound, nll_stderr, nll_samples      importance sampling with K = eval.nll_samples,
                                                  eval.nll_batch_size x eval.nll_chunk rows per pass
    elbo, rec, kl, kl_per_dim                     the ELBO with one posterior sample
    mi_batch, mi_split                            I_q, per-minibatch and whole-split estimators
    au, activity                                  active units and per-dimension activity
    reencoding_error, reencoding_error_per_dim    NE-VAE section 6.1
    mpd, cond_entropy                             DU-VAE eq. 3 and 5
    pca_components, pca_eigenvalues               PCA of the posterior means
    hoyer, hoyer_g_y                              Hoyer sparsity of g(mean) and of g(y), y ~ q(y|x)
    probe_g_mean, probe_g_mean_var, probe_g_y     linear-probe accuracy (labelled data only) on
                                                  g(mean), [g(mean), Var q(y|x)] and g(y), y ~ q

and every plugin's ``eval_metrics`` under ``<plugin id>.<name>``. Which variable (y or z = g(y))
each metric measures is listed in :mod:`vaecore.metrics`: the representation metrics (Hoyer,
probes) are measured on z = g(y), the posterior-space ones (AU, MI, PCA, MPD) on y. Metrics
needing a Gaussian posterior are None when the posterior has no Gaussian (neither a
DiagonalGaussian nor a ``base`` one).

The evaluation runs in eval mode with a ``training=False`` context, streams the split through the
model's device (:func:`vaecore.streaming.device_batches`), draws its samples from its own seeded
stream (``eval.seed``; the caller's RNG state is restored afterwards), so evaluating the same
checkpoint twice gives the same numbers. ``mi_batch`` groups the split into minibatches of
``eval.mi_batch_size`` in an order shuffled with ``eval.seed`` (He et al. shuffle before
batching; in file order a class-sorted split would give one-class minibatches). The probes are
fitted on ``eval.probe_train_size`` rows of the probe split drawn with ``eval.seed``
(stratified by label).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from vaecore.config import EvalConfig
from vaecore.data import Split
from vaecore.hooktypes import Batch, StepContext
from vaecore.metrics import (
    ActiveUnits,
    ELBOTerms,
    HoyerSparsity,
    ImportanceSampledNLL,
    LinearProbeAccuracy,
    MutualInfoBatch,
    MutualInfoSplit,
    PCAComponents,
    PosteriorDiversity,
    ReencodingError,
    gaussian_of,
)
from vaecore.metrics.functional import chunked_log_weights
from vaecore.model import VAE
from vaecore.streaming import device_batches, model_device

PROBES = ("probe_g_mean", "probe_g_mean_var", "probe_g_y")


def _plain(value: Any) -> Any:
    """Tensors to Python numbers and lists (integer tensors to int)."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return int(value) if not value.is_floating_point() else float(value)
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def importance_log_weights(model: VAE, x: torch.Tensor, ctx: StepContext, samples: int, chunk: int):
    """The ``(k, B)`` log-weights of ``samples`` posterior samples per example, ``chunk`` at a time."""
    return chunked_log_weights(lambda k: model(x, ctx, samples=k).log_w, samples, chunk)


@torch.no_grad()
def log_likelihood(
    model: VAE, x: torch.Tensor, samples: int, chunk: int = 100, ctx: StepContext | None = None
) -> torch.Tensor:
    """The importance-sampled estimate of log p(x) per example ``(B,)``, in float64 (eval mode is
    the caller's responsibility)."""
    from vaecore.metrics.functional import streaming_log_mean_exp

    ctx = ctx or model.context(training=False)
    return streaming_log_mean_exp(importance_log_weights(model, x, ctx, samples, chunk))[0]


def _decoded_mean(model: VAE, out: Any) -> torch.Tensor:
    """The decoder mean at the first sample's z. An autoregressive decoder's parameters in ``out``
    are teacher-forced on x itself, so it decodes greedily instead (per-pixel conditional means
    along the greedy decoding, the convention of ``VAE.sample_prior``)."""
    if getattr(model, "autoregressive", False):
        return model.likelihood.mean(model.generate(out.z[0], greedy=True)[1])
    return model.likelihood.mean(out.params[0])


def _probe_features(model: VAE, posterior: Any, y: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor | None]:
    """The three probe inputs, on the representation z = g(.): g(posterior mean), [g(mean),
    variance of q(y|x)] (the Gaussian's variance; None without a Gaussian) and g(y) for one
    posterior sample y."""
    g_mean = model.latent_map(posterior.mean, ctx)
    g = gaussian_of(posterior)
    return {
        "probe_g_mean": g_mean,
        "probe_g_mean_var": None if g is None else torch.cat([g_mean, g.var], -1),
        "probe_g_y": model.latent_map(y, ctx),
    }


def _update_in_shuffled_minibatches(
    metric: MutualInfoBatch, rows: Sequence[tuple[torch.Tensor, ...]], size: int, seed: int
) -> None:
    """Feed ``metric`` the split's rows (lists of per-batch tensors, concatenated) in minibatches
    of ``size`` taken in an order shuffled by ``seed``."""
    columns = [torch.cat(parts) for parts in zip(*rows)]
    order = torch.randperm(columns[0].shape[0], generator=torch.Generator().manual_seed(seed))
    for s in range(0, len(order), size):
        index = order[s : s + size].to(columns[0].device)
        metric.update(*(c[index] for c in columns))


@torch.no_grad()
def evaluate(
    model: VAE,
    split: Split,
    config: EvalConfig | None = None,
    *,
    batch_size: int | None = None,
    nll_samples: int | None = None,
    probe_split: Split | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Every diagnostic on ``split`` (see the module docstring) and the plugins' ``eval_metrics``.

    ``config`` gives the options (default :class:`~vaecore.config.EvalConfig`); ``batch_size``
    and ``nll_samples`` override ``config.batch_size`` (default 500) and ``config.nll_samples``.
    The linear probes are fitted on ``probe_split`` (``config.probe_train_size`` rows of it drawn
    with ``config.seed``, stratified by label) and reported when both splits have labels and
    ``config.probes`` is on.
    """
    cfg = config or EvalConfig()
    k = cfg.nll_samples if nll_samples is None else nll_samples
    mi_bs = cfg.mi_batch_size
    bs = batch_size or cfg.batch_size or 500
    device = model_device(model)
    # metric states are float64: on the model's device, except MPS (no float64) where they stay on the CPU
    metric_device = device if device.type in ("cpu", "cuda") else torch.device("cpu")

    def on(t: torch.Tensor) -> torch.Tensor:
        return t.to(metric_device)

    d = model.latent_dim

    elbo = ELBOTerms(d)
    nll = ImportanceSampledNLL()
    mi_batch, mi_split = MutualInfoBatch(), MutualInfoSplit(chunk=cfg.mi_chunk)
    au = ActiveUnits(d, threshold=cfg.au_threshold)
    pca = PCAComponents(d, threshold=cfg.pca_threshold)
    diversity = PosteriorDiversity(d)
    reenc = ReencodingError(d)
    hoyer, hoyer_g_y = HoyerSparsity(), HoyerSparsity()
    do_probes = cfg.probes and split.y is not None and probe_split is not None and probe_split.y is not None
    probes = {name: LinearProbeAccuracy(weight_decay=cfg.probe_weight_decay) for name in PROBES} if do_probes else {}
    gaussian_seen = True
    mi_rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (loc, log_var, y) for mi_batch
    for metric in (elbo, nll, mi_batch, mi_split, au, pca, diversity, reenc, hoyer, hoyer_g_y, *probes.values()):
        metric.to(metric_device)

    rng_devices = [device] if device.type == "cuda" else []  # CPU always; CUDA when used
    was_training = model.training
    model.eval()
    ctx = model.context(training=False)
    try:
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(cfg.seed)
            batches = tqdm(
                device_batches(model, split, bs, ctx),
                total=split.num_batches(bs),
                desc="eval",
                leave=False,
                disable=not progress,
            )
            for batch in batches:
                x = batch.x
                out = model(x, ctx, samples=1)
                kl_dims = out.kl_per_dim
                elbo.update(on(out.log_px), on(out.kl()), None if kl_dims is None else on(kl_dims))
                posterior = out.posterior
                mean = posterior.mean
                au.update(on(mean))
                pca.update(on(mean))
                y = out.y[0]
                hoyer.update(on(model.latent_map(mean, ctx)))
                hoyer_g_y.update(on(out.z[0]))
                if cfg.reencoding:
                    x_hat = _decoded_mean(model, out)
                    reenc.update(on(y), on(model.encode(x_hat, ctx)[0].mean))
                g = gaussian_of(posterior)
                if g is None:
                    gaussian_seen = False
                else:
                    y_g = y if g is posterior else g.rsample(1)[0][0]
                    loc, log_var, y_g = on(g.loc), on(g.log_var), on(y_g)
                    mi_rows.append((loc, log_var, y_g))
                    mi_split.update(loc, log_var, y_g)
                    diversity.update(loc, on(g.var))
                if probes:
                    feats = _probe_features(model, posterior, y, ctx)
                    for name, metric in probes.items():
                        feat = feats[name]
                        if feat is not None and batch.y is not None:
                            metric.update(on(feat), on(batch.y), train=False)
                if k > 0:
                    for s in range(0, x.shape[0], cfg.nll_batch_size):
                        rows = slice(s, s + cfg.nll_batch_size)
                        ctx.batch = Batch(batch.x[rows], batch.index[rows], None if batch.y is None else batch.y[rows])
                        nll.update(map(on, importance_log_weights(model, x[rows], ctx, k, cfg.nll_chunk)))
            if mi_rows:
                _update_in_shuffled_minibatches(mi_batch, mi_rows, mi_bs, cfg.seed)
            if probes:
                assert probe_split is not None
                fit_on = probe_split.sample(cfg.probe_train_size, cfg.seed)
                for batch in device_batches(model, fit_on, bs, ctx):
                    fit_posterior, _ = model.encode(batch.x, ctx)
                    feats = _probe_features(model, fit_posterior, fit_posterior.rsample(1)[0][0], ctx)
                    for name, metric in probes.items():
                        feat = feats[name]
                        if feat is not None and batch.y is not None:
                            metric.update(on(feat), on(batch.y), train=True)
        results: dict[str, Any] = {}
        if k > 0:
            results.update(nll.compute())
        results.update(elbo.compute())
        if gaussian_seen:
            results["mi_batch"] = mi_batch.compute()
            results["mi_split"] = mi_split.compute()
        else:
            results["mi_batch"] = results["mi_split"] = None
        results.update(au.compute())
        results.update(
            reenc.compute() if cfg.reencoding else dict.fromkeys(("reencoding_error", "reencoding_error_per_dim"))
        )
        results.update(diversity.compute() if gaussian_seen else {"mpd": None, "cond_entropy": None})
        results.update(pca.compute())
        results["hoyer"] = hoyer.compute()
        results["hoyer_g_y"] = hoyer_g_y.compute()
        for name, metric in probes.items():
            results[name] = metric.compute() if metric.eval_x else None
        results = {key: _plain(value) for key, value in results.items()}
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(cfg.seed + 1)
            results.update(model.stack.eval_metrics(model, split, model.context(training=False)))
    finally:
        model.train(was_training)
    return results
