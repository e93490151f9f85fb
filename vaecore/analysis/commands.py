"""The analysis behind ``vaecore sample | traverse | interpolate | analyze | lso``.

Each function takes a loaded run (:func:`vaecore.restore.load_run`), writes its figures into
``out`` and returns an :class:`AnalysisResult`: the numbers behind the figures (a dict, which the
CLI writes next to them as JSON) and the figures themselves. Latent codes y live in the
posterior's space; every decoding goes through ``latent_map`` first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from vaecore.analysis import figures
from vaecore.analysis.geometry import euclidean_path, fisher_rao_distance, fisher_rao_geodesic, fisher_rao_length
from vaecore.checkpoint import load_checkpoint
from vaecore.data import Split
from vaecore.data.splits import draw_rows
from vaecore.metrics import LinearProbeAccuracy, gaussian_of
from vaecore.model import VAE
from vaecore.restore import LoadedRun, restore_model
from vaecore.streaming import encode_split

ACTIVE = 0.01


class AnalysisResult(dict):
    """The numbers of an analysis, a JSON-ready dict whose ``"figures"`` lists the files written,
    and ``.figures``: the matplotlib figures by name (``result.figures["samples"]``), for a
    notebook to show or a script to restyle and save again."""

    def __init__(self, numbers: dict[str, Any], plots: Sequence[figures.Plot | None]):
        kept = [plot for plot in plots if plot is not None]
        super().__init__(numbers, figures=[name for plot in kept for name in plot.files])
        self.figures: dict[str, Any] = {plot.name: plot.figure for plot in kept}


F = TypeVar("F", bound=Callable[..., AnalysisResult])


def captioned(fn: F) -> F:
    """The figures of an analysis of ``loaded`` name its run, checkpoint and epoch under their
    title, from Python as from the command line."""

    @functools.wraps(fn)
    def wrapper(loaded: LoadedRun, *args: Any, **kwargs: Any) -> AnalysisResult:
        epoch = loaded.state.get("epoch")
        with figures.styled(caption=f"run {loaded.run.path.name}, {loaded.source.name} (epoch {epoch})"):
            return fn(loaded, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@torch.no_grad()
def posterior_means(model: VAE, split: Split, batch_size: int = 500) -> torch.Tensor:
    """``posterior.mean`` over a split: the mean the evaluation's AU, PCA and activity use (for a
    flow posterior, the flow's own mean, not its Gaussian base's), on the CPU."""
    return torch.cat([posterior.mean.cpu() for _, posterior in encode_split(model, split, batch_size)])


@torch.no_grad()
def gaussian_params(model: VAE, split: Split, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the Gaussian of the posterior (a flow's base) over a split,
    the Gaussians the Fisher-Rao geometry works with; zero spread without a Gaussian."""
    locs, stds = [], []
    for _, posterior in encode_split(model, split, batch_size):
        g = gaussian_of(posterior)
        locs.append((posterior.mean if g is None else g.loc).cpu())
        stds.append(torch.zeros_like(locs[-1]) if g is None else g.std.cpu())
    return torch.cat(locs), torch.cat(stds)


@torch.no_grad()
def representations(model: VAE, split: Split, batch_size: int = 500) -> torch.Tensor:
    """The representation g(posterior mean) over a split (what ``probe_g_mean`` measures)."""
    ctx = model.context(training=False)
    return torch.cat(
        [model.latent_map(posterior.mean, ctx).cpu() for _, posterior in encode_split(model, split, batch_size, ctx)]
    )


def shown_inputs(split: Split, n: int, seed: int) -> torch.Tensor:
    """The rows of the inputs a figure shows: n drawn with ``seed`` (stratified by label), as
    the evaluation's subsets are, never the first rows of a possibly sorted file; in a random
    order, so that the first few of them are a random draw too."""
    rows = draw_rows(len(split), min(n, len(split)), seed, split.y)
    return rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))]


@torch.no_grad()
def decode_mean(model: VAE, y: torch.Tensor) -> torch.Tensor:
    """The decoder's mean for latent codes y (through ``latent_map``). An autoregressive decoder
    decodes greedily (the per-pixel conditional means along the greedy decoding: the convention
    of ``VAE.sample_prior`` and of the evaluation; for a text likelihood, the greedy sentence)."""
    z = model.latent_map(y, model.context(training=False))
    if model.autoregressive:
        return model.likelihood.mean(model.generate(z, greedy=True)[1])
    return model.likelihood.mean(model.decode(z))


def rendered(model: VAE, x: torch.Tensor) -> list[str] | None:
    """The inputs ``x`` as text when the model's likelihood renders them (a text model), else None."""
    return model.likelihood.render(x.cpu())


def _grid(
    loaded: LoadedRun, images: torch.Tensor, path: Path, rows: int, title: str, labels: list[str] | None = None
) -> figures.Plot | None:
    """An image grid, None when the inputs are not images (or are text)."""
    shape = figures.image_shape(loaded.model.input_shape)
    if shape is None or rendered(loaded.model, images[:1]) is not None:
        return None
    return figures.image_grid(images, shape, path, rows, title, labels)


@captioned
def sample(loaded: LoadedRun, out: str | Path, n: int = 64, seed: int = 0) -> AnalysisResult:
    """Prior samples (y ~ p(y), then g, then the decoder mean) and reconstructions of n test
    inputs drawn with ``seed`` (stratified by label)."""
    out = Path(out)
    model, test = loaded.model, loaded.dataset.test
    torch.manual_seed(seed)
    samples = model.sample_prior(n)
    shown = shown_inputs(test, n, seed)
    x = test.inputs(shown)
    recon = decode_mean(model, posterior_means(model, Split(x)))
    plots = [
        _grid(loaded, samples, out / "samples.png", max(1, int(n**0.5)), f"{n} prior samples (decoder means)"),
        _grid(
            loaded,
            torch.cat([x[:16], recon[:16]]),
            out / "reconstructions.png",
            2,
            "test inputs (top) and their reconstructions (bottom)",
            ["input", "recon."],
        ),
    ]
    if figures.image_shape(model.input_shape) is None and x.flatten(1).shape[1] == 2:
        plots = [
            figures.scatter(
                {"test data": (x, None), "prior samples": (samples, None)}, out / "samples.png", "samples", ("x1", "x2")
            )
        ]
    numbers: dict[str, Any] = {"n": n, "seed": seed, "inputs": shown.tolist()}
    text = rendered(model, x)
    if text is None:
        numbers["mean_abs_reconstruction_error"] = float((recon - x).abs().flatten(1).sum(-1).mean())
    else:  # a text model: sentences, greedy and sampled, instead of pixels
        torch.manual_seed(seed)
        drawn = model.sample_prior(n, mean=False)
        ctx = model.context(training=False)
        redrawn = model.generate(model.latent_map(posterior_means(model, Split(x)), ctx))[0]
        numbers["text"] = {
            "prior samples (greedy)": rendered(model, samples),
            "prior samples (sampled)": rendered(model, drawn),
            "test inputs": text,
            "reconstructions (greedy)": rendered(model, recon),
            "reconstructions (sampled)": rendered(model, redrawn),
        }
    numbers["samples"] = samples.flatten(1).tolist()
    return AnalysisResult(numbers, plots)


@captioned
def traverse(
    loaded: LoadedRun,
    out: str | Path,
    index: int = 0,
    dims: int = 10,
    radius: float = 10.0,
    steps: int = 11,
    zero_dims: list[int] | None = None,
    seed: int = 0,
) -> AnalysisResult:
    """Single-dimension traversals of the most active dimensions (NE 5.3.1) and an interpolation
    along a random direction with the chosen dimensions fixed to zero (NE 5.3.2; default: the
    inactive ones)."""
    out = Path(out)
    model = loaded.model
    mu = posterior_means(model, loaded.dataset.test)
    activity = mu.var(0)
    order = torch.argsort(activity, descending=True).tolist()
    values = torch.linspace(-radius, radius, steps)
    base = mu[index]
    chosen = order[: min(dims, model.latent_dim)]
    codes = []
    for d in chosen:
        y = base.repeat(steps, 1)
        y[:, d] = values
        codes.append(y)
    images = decode_mean(model, torch.cat(codes))
    labels = [f"dim {d}" for d in chosen]
    title = f"traversals of test input {index}, the {len(chosen)} most active dimensions from -{radius:g} to {radius:g}"
    plots = [_grid(loaded, images, out / "traverse.png", len(chosen), title, labels)]
    zero = [d for d in range(model.latent_dim) if activity[d] < ACTIVE] if zero_dims is None else zero_dims
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(model.latent_dim, generator=gen)
    direction[zero] = 0.0
    if direction.norm() > 0:
        direction = direction / direction.norm()
    line = values[:, None] * direction
    plots.append(
        _grid(
            loaded,
            decode_mean(model, line),
            out / "random_direction.png",
            1,
            f"random direction, {len(zero)} dimensions fixed to zero",
        )
    )
    numbers: dict[str, Any] = {
        "index": index,
        "activity": activity.tolist(),
        "order": order,
        "traversed": chosen,
        "values": values.tolist(),
        "zero_dims": zero,
        "direction": direction.tolist(),
    }
    if rendered(model, images[:1]) is not None:
        numbers["text"] = {
            **{f"dim {d}": rendered(model, images[i * steps : (i + 1) * steps]) for i, d in enumerate(chosen)},
            "random direction": rendered(model, decode_mean(model, line)),
        }
    return AnalysisResult(numbers, plots)


@captioned
def interpolate(
    loaded: LoadedRun,
    out: str | Path,
    start: int,
    end: int,
    path: str = "fisher-rao",
    steps: int = 10,
    decode: str = "mean",
    seed: int = 0,
) -> AnalysisResult:
    """Between the posteriors of two test inputs, along the Fisher-Rao geodesic or the straight line."""
    out = Path(out)
    model, test = loaded.model, loaded.dataset.test
    for name, i in (("--from", start), ("--to", end)):
        if not 0 <= i < len(test):
            from vaecore.errors import VaecoreError

            raise VaecoreError(f"{name} {i}: the test split has {len(test)} inputs (0 to {len(test) - 1})")
    mu, sigma = gaussian_params(model, Split(test.inputs([start, end])))
    t = torch.linspace(0, 1, steps)
    fine = torch.linspace(0, 1, 2001)
    paths = {"fisher-rao": fisher_rao_geodesic, "euclidean": euclidean_path}
    lengths = {
        name: float(fisher_rao_length(*fn(mu[0], sigma[0], mu[1], sigma[1], fine))) for name, fn in paths.items()
    }
    eps = torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(seed))
    rows, labels, chosen, text = [], [], None, {}
    for name, fn in paths.items():  # both paths in one figure, each labelled with its length
        pm, ps = fn(mu[0], sigma[0], mu[1], sigma[1], t)
        y = (pm + ps * eps).float() if decode == "sample" else pm.float()
        rows.append(torch.cat([test.inputs([start]), decode_mean(model, y), test.inputs([end])]))
        labels.append(f"{name}\nlength {lengths[name]:.2f}")
        sentences = rendered(model, rows[-1])
        if sentences is not None:
            text[name] = sentences
        if name == path:
            chosen = (pm, ps)
    assert chosen is not None
    m, s = chosen
    title = f"test input {start} to {end}: Fisher-Rao lengths of the two paths, decoding {decode}s"
    plot = _grid(loaded, torch.cat(rows), out / "interpolate.png", len(rows), title, labels)
    numbers = {
        "from": start,
        "to": end,
        "path": path,
        "decode": decode,
        "t": t.tolist(),
        "mu": m.tolist(),
        "sigma": s.tolist(),
        "fisher_rao_distance": float(fisher_rao_distance(mu[0], sigma[0], mu[1], sigma[1])),
        "fisher_rao_length": lengths,
    }
    if text:
        numbers["text"] = text
    return AnalysisResult(numbers, [plot])


def _probe_accuracy(model: VAE, train: Split, test: Split) -> float:
    assert train.y is not None and test.y is not None
    probe = LinearProbeAccuracy()
    probe.update(representations(model, train), train.y, train=True)
    probe.update(representations(model, test), test.y, train=False)
    return float(probe.compute())


@captioned
def analyze(loaded: LoadedRun, out: str | Path, probe_train: int = 5000, seed: int = 0) -> AnalysisResult:
    """Activity bar chart, PCA spectrum of the posterior means, the 2-D latent space (when D = 2)
    and linear-probe accuracy (on g(mean), fitted on ``probe_train`` training rows drawn with
    ``seed``) over training from the kept per-epoch checkpoints."""
    out = Path(out)
    model, data = loaded.model, loaded.dataset
    mu = posterior_means(model, data.test)
    activity = mu.var(0)
    order = torch.argsort(activity, descending=True)
    plots = [
        figures.bar_chart(
            activity[order].tolist(),
            [str(int(d)) for d in order],
            out / "activity.png",
            f"activity A_z = Var_x E[y_z | x] on the test split (active: > {ACTIVE})",
            "variance of the posterior mean",
            "latent dimension (sorted by activity)",
            log=True,
            threshold=ACTIVE,
        )
    ]
    centred = mu - mu.mean(0)
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred / (len(mu) - 1)).flip(0).clamp(min=0)
    plots.append(
        figures.bar_chart(
            eigenvalues.tolist(),
            [str(i + 1) for i in range(len(eigenvalues))],
            out / "pca.png",
            f"PCA eigenvalues of the posterior means (components: > {ACTIVE})",
            "eigenvalue",
            "principal component",
            log=True,
            threshold=ACTIVE,
        )
    )
    numbers: dict[str, Any] = {
        "activity": activity.tolist(),
        "active_units": int((activity > ACTIVE).sum()),
        "pca_eigenvalues": eigenvalues.tolist(),
        "pca_components": int((eigenvalues > ACTIVE).sum()),
    }
    if model.latent_dim == 2:
        loc, sigma = gaussian_params(model, data.test)
        samples = loc + sigma * torch.randn_like(sigma)
        plots.append(
            figures.scatter(
                {"aggregate posterior (one y per input)": (samples, data.test.y), "posterior means": (mu, data.test.y)},
                out / "latent2d.png",
                "2-D latent space (test split)",
                ("y1", "y2"),
            )
        )
    kept = loaded.run.epoch_checkpoints()
    if kept and data.has_labels:
        train = data.train.sample(probe_train, seed)
        curve = []
        for epoch, path in kept:
            restore_model(model, load_checkpoint(path), path)
            curve.append((epoch, _probe_accuracy(model, train, data.test)))
        restore_model(model, loaded.state, loaded.source)
        plots.append(
            figures.line_chart(
                {"probe on g(mean)": ([e for e, _ in curve], [a for _, a in curve])},
                out / "probe_epochs.png",
                f"linear-probe accuracy during training ({len(train)} training rows)",
                "epoch",
                "test accuracy",
            )
        )
        numbers["probe_over_epochs"] = [{"epoch": e, "accuracy": a} for e, a in curve]
    return AnalysisResult(numbers, plots)


@captioned
def lso(
    loaded: LoadedRun,
    out: str | Path,
    n: int = 16,
    inits: int = 5,
    iterations: int = 500,
    lr: float = 0.05,
    thresholds: tuple[float, ...] = (10.0, 1.0, 0.1),
    seed: int = 0,
) -> AnalysisResult:
    """Latent space optimisation (NE 5.4): with the decoder frozen, fit codes to held-out images
    by Adam from random N(0, I) and from encoder initialisations, the loss the exact -log p(x|z) (an
    autoregressive decoder teacher-forced on the image); report the iterations until the
    loss is within each threshold (nats per image) of its final value, and the spread of the
    codes reached from different random initialisations."""
    out = Path(out)
    model = loaded.model
    held_out = shown_inputs(loaded.dataset.test, n, seed)
    x = loaded.dataset.test.inputs(held_out)
    ctx = model.context(training=False)
    for p in model.parameters():
        p.requires_grad_(False)

    bar = tqdm(
        total=(inits + 1) * iterations,
        desc="lso",
        unit="it",
        leave=False,
        disable=None if loaded.config.train.progress else True,
    )

    def run(y0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = y0.clone().requires_grad_(True)
        opt = torch.optim.Adam([y], lr=lr)
        history = []
        for _ in range(iterations):
            bar.update(1)
            loss = -model.likelihood.log_prob(x, model.decode(model.latent_map(y, ctx), x).unsqueeze(0))[0]
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
            history.append(loss.detach())
        return torch.stack(history), y.detach()

    def converge(history: torch.Tensor) -> dict[str, float]:
        gap = history - history[-1]
        return {str(t): float(((gap > t).float().cumprod(0).sum(0)).mean()) for t in thresholds}

    gen = torch.Generator().manual_seed(seed)
    random_runs = [run(torch.randn(n, model.latent_dim, generator=gen)) for _ in range(inits)]
    encoder_history, _ = run(posterior_means(model, Split(x)))
    bar.close()
    finals = torch.stack([y for _, y in random_runs])
    pairwise = torch.cdist(finals.transpose(0, 1), finals.transpose(0, 1)).mean()
    curves = {
        "random init": torch.stack([h for h, _ in random_runs]).mean(0).mean(-1),
        "encoder init": encoder_history.mean(-1),
    }
    its = list(range(1, iterations + 1))
    plot = figures.line_chart(
        {k: (its, v.tolist()) for k, v in curves.items()},
        out / "lso.png",
        f"latent space optimisation of {n} test inputs (decoder frozen, Adam lr {lr:g})",
        "iteration",
        "-log p(x|z) per image (nats)",
    )
    numbers = {
        "n": n,
        "inputs": held_out.tolist(),
        "inits": inits,
        "iterations": iterations,
        "lr": lr,
        "iterations_to_converge": {
            "random": [converge(h) for h, _ in random_runs],
            "encoder": converge(encoder_history),
        },
        "final_loss": {
            "random": [float(h[-1].mean()) for h, _ in random_runs],
            "encoder": float(encoder_history[-1].mean()),
        },
        "spread": {"std_across_inits": float(finals.std(0).mean()), "mean_pairwise_distance": float(pairwise)},
    }
    return AnalysisResult(numbers, [plot])
