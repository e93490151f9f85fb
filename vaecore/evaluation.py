"""Evaluation of a trained model on a split: every diagnostic of the papers, and the plugins' own.

:func:`evaluate` streams the split once through the :mod:`vaecore.metrics` metrics (plus a pass
over the probe-training split when the data has labels) and returns plain JSON-ready values under
the ``eval.json`` keys::

    nll, iwae_bound, nll_stderr, nll_samples      importance sampling with K = eval.nll_samples,
                                                  eval.nll_batch_size x eval.nll_chunk rows per pass
    nll_per_unit, ppl                             the NLL per scored unit and its exponential, the
                                                  perplexity per word (only for a likelihood whose
                                                  ``units`` counts them: text)
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

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torchmetrics import Metric
from tqdm.auto import tqdm

from vaecore.config import Config, EvalConfig
from vaecore.data import Dataset, Split
from vaecore.hooktypes import Batch, StepContext, set_context
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


def evaluate_checkpoint(
    model: VAE,
    dataset: Dataset,
    config: Config,
    source: Path,
    epoch: int | None,
    *,
    nll_samples: int | None = None,
    shard: Callable[[Split], Split] = lambda split: split,
    progress: bool = False,
) -> dict[str, Any]:
    """The record ``eval.json`` holds, for ``train`` and ``vaecore eval`` alike: the split, the
    checkpoint (its file name, or its path when it is not in a run's ``checkpoints/``) and its
    epoch, the rows of the evaluated and the training split, then :func:`evaluate` of ``model``
    (loaded from ``source``) on ``eval.split`` with the probes fitted on ``eval.probe_split``.
    ``shard`` takes each process's part under torchrun."""
    cfg = config.eval
    label = source.name if source.parent.name == "checkpoints" else str(source)
    return {
        "split": cfg.split,
        "checkpoint": label,
        "epoch": epoch,
        "split_rows": len(dataset.split(cfg.split)),
        "train_rows": len(dataset.train),
        **evaluate(
            model,
            shard(dataset.split(cfg.split)),
            cfg,
            batch_size=cfg.batch_size or config.train.eval_batch_size,
            nll_samples=nll_samples,
            probe_split=shard(dataset.split(cfg.probe_split)),
            progress=progress,
        ),
    }


class _Diagnostics:
    """The core's metrics over one split, fed batch by batch from the evaluation's single pass,
    and the torchmetrics ``Metric``s plugins return from ``eval_metrics``, fed from the same pass."""

    def __init__(self, model: VAE, cfg: EvalConfig, k: int, probes: bool, metric_device: torch.device):
        d = model.latent_dim
        self.model, self.cfg, self.k, self.device = model, cfg, k, metric_device
        self.elbo = ELBOTerms(d)
        self.nll = ImportanceSampledNLL()
        self.mi_batch, self.mi_split = MutualInfoBatch(), MutualInfoSplit(chunk=cfg.mi_chunk)
        self.au = ActiveUnits(d, threshold=cfg.au_threshold)
        self.pca = PCAComponents(d, threshold=cfg.pca_threshold)
        self.diversity = PosteriorDiversity(d)
        self.reenc = ReencodingError(d)
        self.hoyer, self.hoyer_g_y = HoyerSparsity(), HoyerSparsity()
        decay = cfg.probe_weight_decay
        self.probes = {name: LinearProbeAccuracy(weight_decay=decay) for name in PROBES} if probes else {}
        self.plugin_metrics: dict[str, Metric] = {}
        self.gaussian_seen = True
        self.mi_rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (loc, log_var, y) for mi_batch
        for metric in self._core():
            metric.to(metric_device)

    def _core(self) -> list[Metric]:
        core = [self.elbo, self.nll, self.mi_batch, self.mi_split, self.au, self.pca, self.diversity, self.reenc]
        return [*core, self.hoyer, self.hoyer_g_y, *self.probes.values()]

    def on(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device)

    def feed_plugins(self, metrics: dict[str, Metric]) -> None:
        """Plugin metrics to update with ``(batch, out)`` for every batch of the pass."""
        for metric in metrics.values():
            metric.to(self.device)
        self.plugin_metrics = metrics

    def update(self, batch: Batch, ctx: StepContext) -> None:
        """Every metric on one batch: one forward pass with one posterior sample, then the
        importance samples of the NLL, then the plugins' metrics on the same output."""
        model, cfg, on = self.model, self.cfg, self.on
        x = batch.x
        out = model(x, ctx, samples=1)
        kl_dims = out.kl_per_dim
        self.elbo.update(on(out.log_px), on(out.kl()), None if kl_dims is None else on(kl_dims))
        posterior = out.posterior
        mean = posterior.mean
        self.au.update(on(mean))
        self.pca.update(on(mean))
        y = out.y[0]
        self.hoyer.update(on(model.latent_map(mean, ctx)))
        self.hoyer_g_y.update(on(out.z[0]))
        if cfg.reencoding:
            x_hat = _decoded_mean(model, out)
            self.reenc.update(on(y), on(model.encode(x_hat, ctx)[0].mean))
        g = gaussian_of(posterior)
        if g is None:
            self.gaussian_seen = False
        else:
            y_g = y if g is posterior else g.rsample(1)[0][0]
            loc, log_var, y_g = on(g.loc), on(g.log_var), on(y_g)
            self.mi_rows.append((loc, log_var, y_g))
            self.mi_split.update(loc, log_var, y_g)
            self.diversity.update(loc, on(g.var))
        if self.probes:
            feats = _probe_features(model, posterior, y, ctx)
            for name, metric in self.probes.items():
                feat = feats[name]
                if feat is not None and batch.y is not None:
                    metric.update(on(feat), on(batch.y), train=False)
        if self.k > 0:
            for s in range(0, x.shape[0], cfg.nll_batch_size):
                rows = slice(s, s + cfg.nll_batch_size)
                part = Batch(batch.x[rows], batch.index[rows], None if batch.y is None else batch.y[rows])
                set_context(ctx, batch=part)
                units = model.likelihood.units(x[rows])
                self.nll.update(
                    map(on, importance_log_weights(model, x[rows], ctx, self.k, cfg.nll_chunk)),
                    None if units is None else on(units),
                )
            set_context(ctx, batch=batch)
        for fed in self.plugin_metrics.values():
            fed.update(batch, out)

    def finish_pass(self) -> None:
        """What needs the whole split: ``mi_batch`` over shuffled minibatches."""
        if self.mi_rows:
            _update_in_shuffled_minibatches(self.mi_batch, self.mi_rows, self.cfg.mi_batch_size, self.cfg.seed)

    def fit_probes(self, fit_on: Split, batch_size: int, ctx: StepContext) -> None:
        model = self.model
        for batch in device_batches(model, fit_on, batch_size, ctx):
            fit_posterior, _ = model.encode(batch.x, ctx)
            feats = _probe_features(model, fit_posterior, fit_posterior.rsample(1)[0][0], ctx)
            for name, metric in self.probes.items():
                feat = feats[name]
                if feat is not None and batch.y is not None:
                    metric.update(self.on(feat), self.on(batch.y), train=True)

    def results(self) -> dict[str, Any]:
        cfg = self.cfg
        results: dict[str, Any] = {}
        if self.k > 0:
            results.update(self.nll.compute())
        results.update(self.elbo.compute())
        if self.gaussian_seen:
            results["mi_batch"] = self.mi_batch.compute()
            results["mi_split"] = self.mi_split.compute()
        else:
            results["mi_batch"] = results["mi_split"] = None
        results.update(self.au.compute())
        results.update(
            self.reenc.compute() if cfg.reencoding else dict.fromkeys(("reencoding_error", "reencoding_error_per_dim"))
        )
        results.update(self.diversity.compute() if self.gaussian_seen else {"mpd": None, "cond_entropy": None})
        results.update(self.pca.compute())
        results["hoyer"] = self.hoyer.compute()
        results["hoyer_g_y"] = self.hoyer_g_y.compute()
        for name, metric in self.probes.items():
            results[name] = metric.compute() if metric.eval_x else None
        return {key: _plain(value) for key, value in results.items()}


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
    ``config.probes`` is on. A plugin's ``eval_metrics`` is called first; the torchmetrics
    ``Metric``s it returns are updated with ``(batch, out)`` in the same pass as the core's
    metrics and reported by their ``compute()``.
    """
    cfg = config or EvalConfig()
    k = cfg.nll_samples if nll_samples is None else nll_samples
    bs = batch_size or cfg.batch_size or 500
    device = model_device(model)
    # metric states are float64: on the model's device, except MPS (no float64) where they stay on the CPU
    metric_device = device if device.type in ("cpu", "cuda") else torch.device("cpu")
    do_probes = cfg.probes and split.y is not None and probe_split is not None and probe_split.y is not None
    diagnostics = _Diagnostics(model, cfg, k, do_probes, metric_device)
    rng_devices = [device] if device.type == "cuda" else []  # CPU always; CUDA when used
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(cfg.seed + 1)
            from_plugins = model.stack.eval_metrics(model, split, model.context(training=False))
        diagnostics.feed_plugins({name: v for name, v in from_plugins.items() if isinstance(v, Metric)})
        ctx = model.context(training=False)
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(cfg.seed)
            batches = device_batches(model, split, bs, ctx)
            shown = None if progress else True  # None: tqdm shows the bar on a terminal only
            for batch in tqdm(batches, total=split.num_batches(bs), desc="eval", leave=False, disable=shown):
                diagnostics.update(batch, ctx)
            diagnostics.finish_pass()
            if do_probes:
                assert probe_split is not None
                diagnostics.fit_probes(probe_split.sample(cfg.probe_train_size, cfg.seed), bs, ctx)
        results = diagnostics.results()
        for name, value in from_plugins.items():
            results[name] = _plain(value.compute()) if isinstance(value, Metric) else value
        return results
    finally:
        model.train(was_training)
