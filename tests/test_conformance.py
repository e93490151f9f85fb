"""The conformance suite of vaecore.testing: it passes on conforming plugins (a stateful test plugin
and every installed plugin of plugins/) and catches the faults it is there to catch."""

from __future__ import annotations

import random
from importlib import metadata

import attrs
import pytest
import torch
from torch import nn

from vaecore import HOOK_API_VERSION, Term, hookimpl
from vaecore import validators as v
from vaecore.plugin_manager import is_identifier
from vaecore.testing import make_registry, synthetic_dataset
from vaecore.testing.conformance import PluginConformance

# a conforming plugin with parameters, a buffer and options ---------------------------------------


@attrs.define(kw_only=True)
class GateOptions:
    weight: float = attrs.field(default=0.1, validator=v.ge(0))
    init: float = attrs.field(default=1.0, validator=v.gt(0))


class Gate(nn.Module):
    """z = y * softplus(gate) per dimension, a penalty on the gates, and a step counter buffer."""

    api_version = HOOK_API_VERSION
    Options = GateOptions

    def __init__(self, options: GateOptions):
        super().__init__()
        self.options = options

    @hookimpl
    def setup(self, info):
        self.gate = nn.Parameter(torch.full((info.latent_dim,), self.options.init))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @hookimpl
    def latent_map(self, y):
        return y * nn.functional.softplus(self.gate)

    @hookimpl
    def extra_loss(self, out):
        return {"gate": Term(self.gate.pow(2).mean(), weight=self.options.weight)}

    @hookimpl
    def on_step_end(self, ctx):
        if ctx.training:
            self.steps += 1

    @hookimpl
    def eval_metrics(self):
        return {"steps": int(self.steps), "gates": self.gate.detach().tolist()}


class TestGateConformance(PluginConformance):
    plugin_name = "gate"
    plugin_class = Gate
    options = {"weight": 0.5, "init": 0.7}
    bad_options = {"weight": (-1.0, "must be >= 0"), "init": (0.0, "must be > 0")}
    partners = ("ne",)


# every installed plugin of this repository ------------------------------------------------------

REPO_PLUGINS = sorted(
    ep.name
    for ep in metadata.entry_points(group="vaecore.plugins")
    if getattr(ep, "dist", None) is not None
    and ep.dist.name.startswith("vaecore-")
    and ep.dist.name.endswith("-plugin")
)
# the partners each repository plugin is stacked with here: the plugin's own suite stacks it with all
CORE_PARTNERS = ("ne",)
# options for plugins whose options have no defaults
REQUIRED_OPTIONS = {
    "intel": {"mapping": "sparse"},
    # cycles over train.epochs x steps change when a resume adds epochs; a period in epochs does not
    "kl_cyclic": {"period_epochs": 1.5},
}

for _name in REPO_PLUGINS:
    globals()[f"TestInstalled_{_name}"] = type(
        f"TestInstalled_{_name}",
        (PluginConformance,),
        {
            "plugin_name": _name,
            # a Python keyword (``as``) cannot be an id: give the entry one
            "plugin_id": None if is_identifier(_name) else f"{_name}_",
            "options": REQUIRED_OPTIONS.get(_name, {}),
            "partners": [p for p in CORE_PARTNERS if p in REPO_PLUGINS],
        },
    )


# faults the suite catches ---------------------------------------------------------------------


class Shrink:
    """latent_map drops a dimension: the decoder's input no longer has the latent size."""

    api_version = HOOK_API_VERSION

    @hookimpl
    def latent_map(self, y):
        return y[..., :-1]


class Detach:
    """Detaches the posterior: no gradient reaches the encoder."""

    api_version = HOOK_API_VERSION

    @hookimpl
    def post_posterior(self, posterior):
        from vaecore.distributions import DiagonalGaussian

        return DiagonalGaussian(posterior.loc.detach(), posterior.var.detach())


class Unseeded:
    """Draws noise from the operating system, outside the seeded and checkpointed RNGs."""

    api_version = HOOK_API_VERSION

    @hookimpl
    def extra_loss(self, out):
        return {"noise": out.z.sum() * 0 + random.SystemRandom().random()}


class Default:
    """A hook argument with a default: pluggy would never pass it."""

    api_version = HOOK_API_VERSION

    @hookimpl
    def extra_loss(self, out, scale=2.0):
        return {"l": out.z.pow(2).mean() * scale}


def suite(cls: type, **attributes):
    return type(
        f"Suite{cls.__name__}",
        (PluginConformance,),
        {"plugin_name": "bad", "plugin_class": cls, "partners": (), **attributes},
    )()


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(n=128, dim=16)


def test_catches_a_shape_change(data):
    s = suite(Shrink)
    with pytest.raises(Exception, match="latent|size|shape|mat1"):
        s.test_hooks_keep_shapes_and_gradients(s.conformance_registry(), data)


def test_catches_a_cut_gradient(data):
    s = suite(Detach)
    with pytest.raises(AssertionError, match="no gradient reaches the encoder"):
        s.test_hooks_keep_shapes_and_gradients(s.conformance_registry(), data)


def test_catches_nondeterminism(data, tmp_path):
    s = suite(Unseeded)
    from vaecore.testing import run_training
    from vaecore.testing.conformance import RUN_SECTIONS

    reference = tmp_path / "ref"
    run_training(s.raw_config([s.entry()], **RUN_SECTIONS), reference, data, s.conformance_registry())
    with pytest.raises(AssertionError):
        s.test_deterministic_under_a_seed(reference, tmp_path, data)


def test_catches_a_hook_argument_with_a_default(data):
    from vaecore.errors import PluginError

    s = suite(Default)
    with pytest.raises(PluginError, match="defaults"):
        s.test_registers_with_no_pending_hooks(s.conformance_registry(), data)


def test_catches_an_unvalidated_option(data):
    @attrs.define(kw_only=True)
    class Loose:
        weight: float = 1.0  # no validator: a negative weight is accepted

    class Lax:
        api_version = HOOK_API_VERSION
        Options = Loose

        def __init__(self, options):
            self.options = options

        @hookimpl
        def extra_loss(self, out):
            return {"l": Term(out.z.pow(2).mean(), self.options.weight)}

    s = suite(Lax, bad_options={"weight": (-1.0, "must be >= 0")})
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        s.test_bad_options_are_refused_with_their_path(s.conformance_registry())


def test_claimed_hook_clash_is_expected_to_be_an_error(data):
    """Two claimants of ``bound`` in one stack: the suite expects the config error, not a winner."""
    from vaecore.objectives import ELBO

    class Bound2:
        api_version = HOOK_API_VERSION

        @hookimpl
        def bound(self, out, ctx):
            return ELBO(0.0).bound(out, ctx)

    s = suite(Bound2)
    s._check_stack([s.entry(), s.entry()], ["bad1", "bad2"], data)  # passes: the clash is refused


def test_partners_default_to_every_installed_plugin():
    class Everyone(PluginConformance):
        plugin_name = "gate"
        plugin_class = Gate

    assert Everyone.partner_names() == [n for n in make_registry().names() if n != "gate"]


# partners that are broken are skipped, not failed ------------------------------------------------


class MisspelledPartner:
    """A partner whose only hook has no spec: it loads, but does not register."""

    api_version = HOOK_API_VERSION

    @hookimpl
    def extra_los(self, out):
        return None


class WithBrokenPartner(PluginConformance):  # not collected (no Test prefix): driven by the test below
    plugin_name = "gate"
    plugin_class = Gate

    @classmethod
    def conformance_registry(cls):
        return make_registry({"gate": Gate, "broken": MisspelledPartner}, entry_points=False)


def test_a_partner_that_does_not_register_is_skipped_with_its_reason():
    with pytest.raises(pytest.skip.Exception, match="partner 'broken' does not register on its own:.*extra_los"):
        WithBrokenPartner().test_composes_with_installed_plugins("broken", synthetic_dataset(n=64, dim=16))
