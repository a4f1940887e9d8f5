"""Every hook searchcore calls, declared once, grouped by phase.

The data flow is one way: plugins -> space -> sampler -> architecture spec -> model ->
trainer -> metrics -> tracker. A plugin implements any subset of these hooks with
``@searchcore.hookimpl``; an implementation may accept fewer arguments than the spec
declares, so hooks can grow without breaking plugins. Hooks are always called with
keyword arguments.

Catalog hooks (``searchcore_blocks``, ``searchcore_datasets`` ...) receive a ``register``
callback. The host checks what is registered, refuses a name that another plugin already
took (naming both plugins) and remembers which plugin provided each item.

The improvement hooks (``searchcore_options``, ``searchcore_dimensions``,
``searchcore_transform``) are called once per plugin, so the host knows which plugin
declared which dimension and can pass each plugin its own options and parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "searchcore"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- space phase ------------------------------------------------------------------------


@hookspec
def searchcore_options() -> dict[str, Any] | None:
    """Declare the options this plugin accepts in a space file, with their defaults.

    Called once per plugin when a space is resolved. Return a dict ``{option: default}``;
    the host refuses option keys a space file sets that are not in it, and values whose type
    differs from the default's (a list default accepts a non-empty list of the same element
    type). The merged options reach ``searchcore_dimensions`` and ``searchcore_transform``
    as ``options``. Return None (or do not implement the hook) for a plugin without options.
    """


@hookspec
def searchcore_dimensions(base: dict, options: dict[str, Any]) -> list | None:
    """Declare the search-space dimensions this plugin adds.

    :param base: the backbone's architecture spec before any improvement (read-only), so a
        plugin can add one dimension per stage.
    :param options: this plugin's options, defaults merged with the space file's overrides.
    :return: a list of :class:`searchcore.space.Dimension`. Names must be unique across all
        plugins and, by convention, start with the plugin's name (``kernel.s1``); the host
        reports a clash naming both plugins. Each dimension has an ``off`` value: with every
        dimension at ``off`` the transformation must leave the spec unchanged.
    """


# --- architecture phase -----------------------------------------------------------------


@hookspec
def searchcore_transform(spec: dict, params: dict[str, Any], options: dict[str, Any]) -> dict | None:
    """Apply this plugin's improvement to an architecture spec.

    Called once per plugin, in the order of plugin names, each call receiving the previous
    call's result. Must be pure: never mutate ``spec`` (copy it, e.g. with
    ``searchcore.arch.spec.copy_spec``), depend only on the arguments.

    :param spec: the architecture spec so far.
    :param params: the values sampled for this plugin's own dimensions, keyed by full name;
        a conditional dimension whose condition did not hold is absent.
    :param options: this plugin's options.
    :return: the new spec, or None to leave it unchanged. Built-in plugins commute: each one
        edits its own keys of a stage and copies common block keys (``k``, ``bn``, ``act``)
        when it replaces blocks, so the order of plugins does not change the result.
    """


# --- build phase ------------------------------------------------------------------------


@hookspec
def searchcore_blocks(register: Callable[..., None]) -> None:
    """Register the block types this plugin can build.

    Call ``register(type_name, factory)``; ``factory(in_channels, options, ctx)`` returns
    ``(module, out_channels)``, where ``options`` is the block's dict without ``type`` and
    ``ctx`` (:class:`searchcore.arch.build.BuildContext`) builds nested block lists. Type names of
    plugins are ``plugin.block`` (``attention.se``), so a spec naming a type whose plugin is
    not loaded can say which plugin would provide it.
    """


@hookspec
def searchcore_backbones(register: Callable[..., None]) -> None:
    """Register base architectures a space can start from.

    Call ``register(name, factory)``; ``factory(input_shape, classes, options)`` returns an
    architecture spec. The seed CNN is registered as ``seed-cnn``.
    """


# --- data, objectives, strategies --------------------------------------------------------


@hookspec
def searchcore_datasets(register: Callable[..., None]) -> None:
    """Register datasets by name.

    Call ``register(name, loader)``; ``loader(arg, root, download, seed, val_fraction,
    test_fraction)`` returns a :class:`searchcore.train.data.Splits`. ``arg`` is the text after a
    colon in the dataset name (``imagefolder:PATH``), or None.
    """


@hookspec
def searchcore_objectives(register: Callable[..., None]) -> None:
    """Register objectives a search can optimise.

    Call ``register(objective)`` with a :class:`searchcore.train.objectives.Objective`: a name, a
    direction (``maximize``/``minimize``) and a function of the trained model and its data.
    """


@hookspec
def searchcore_samplers(register: Callable[..., None]) -> None:
    """Register search strategies (Optuna samplers) by name.

    Call ``register(name, factory)``; ``factory(seed, multi_objective)`` returns an
    ``optuna.samplers.BaseSampler``. A factory may also accept ``dimensions`` (the space's
    dimensions), ``epochs`` (the budget's epochs per trial) and ``scorer``: ``scorer(params)``
    scores a candidate's params by the space file's zero-cost proxies without training it (higher
    is more promising, None when it could not be scored); the search charges its time. A sampler with a ``pruner``
    attribute brings its own pruner (a multi-fidelity strategy); the search uses it instead of
    ``search.pruner``.
    """


@hookspec
def searchcore_zero_cost(register: Callable[..., None]) -> None:
    """Register zero-cost proxies: scores of an untrained model that rank candidates before any training.

    Call ``register(name, scorer)``; ``scorer(model, batch)`` gets the freshly built, untrained
    ``torch.nn.Module`` on the CPU and ``batch``, a tensor of inputs ``[N, C, H, W]`` from the training
    split (the same batch for every candidate of a search), or None when the search has no data; it
    returns a float. By convention higher is more promising; a cost-like score (``params``, ``macs``:
    lower is cheaper) says so with an attribute ``direction = "minimize"`` on the scorer, and the search
    flips its sign. A data-free scorer (``synflow``) ignores ``batch``. A scorer must leave the model
    as it found it (weights, buffers, training mode) and be deterministic; the search measures the
    time scoring takes and records it (``zero_cost_seconds`` on the parent run). A space file picks
    the proxies with ``search.zero_cost``; the core plugin registers ``naswot``, ``synflow``,
    ``params`` and ``macs``.
    """


@hookspec
def searchcore_evaluators(register: Callable[..., None]) -> None:
    """Register evaluators that score a spec without the default trainer.

    Call ``register(name, evaluator)``; a tabular benchmark (NAS-Bench-201) looks the spec up
    instead of training it. ``evaluator(spec, config, report)`` returns a dict of metrics and
    calls ``report(epoch, metrics)`` for intermediate values.
    """


# --- training phase ---------------------------------------------------------------------


@hookspec
def searchcore_training(model: Any, spec: dict, options: dict[str, Any], context: Any) -> dict | None:
    """Change how a freshly built model is trained: distillation, pruning, records.

    Called for every model searchcore trains from a spec (a trial, a retrained winner, the
    baseline, ``searchcore train``), once per loaded plugin that implements it, in plugin-name
    order, after the build and before the first epoch. What to do is read from the spec (the
    plugin's own blocks in it), never from sampled params, so the same spec retrains the same
    way; a plugin whose blocks are absent returns None.

    :param model: the built ``torch.nn.Module``, untrained (weights a pretrained block loaded
        are already in it).
    :param spec: the architecture spec it was built from (read-only).
    :param options: this plugin's options from the space file (defaults when it is not enabled).
    :param context: a :class:`searchcore.train.fit.TrainingContext`: the data splits, the train
        config, ``train(model, epochs)`` to fine-tune, ``evaluate(model)``, and ``metrics``, a
        dict whose entries (``teacher_val_accuracy``, ``sparsity`` ...) join the trial's record.
    :return: None, or a dict with ``loss_fn`` (``loss_fn(logits, targets, inputs)`` replaces
        cross-entropy; at most one plugin may set it for a spec) and/or ``after``
        (``after(model, context)``, run once after training, e.g. to prune and fine-tune). An
        exception fails only this trial, with the message as its reason.
    """
