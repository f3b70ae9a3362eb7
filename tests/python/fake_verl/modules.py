"""The verl modules the adapter imports, registered in sys.modules per version.

* `verl.__version__` (verl/__init__.py reads verl/version/version);
* `verl.utils.dataset.rl_dataset`: RLHFDataset (the version's item format), collate_fn;
* `verl.experimental.dataset.sampler` (v0.5.0..v0.7.1): AbstractSampler (a torch Sampler with
  an abstract __init__(data_source, data_config)) and AbstractCurriculumSampler (abstract
  update(batch));
* `verl.trainer.ppo.v1.replay_buffer` (v0.9.0..): ReplayBuffer, and `transfer_queue`.

install() also drops `dots_client.verl` from sys.modules, as a new process would not have it:
the adapter picks its mechanism when imported.
"""

import abc
import sys
import types

from fake_verl import core, versions


class AbstractSampler(abc.ABC):
    @abc.abstractmethod
    def __init__(self, data_source, data_config):
        pass


class AbstractCurriculumSampler(AbstractSampler):
    @abc.abstractmethod
    def update(self, batch):
        pass


def rlhf_dataset_class():
    return core.RLHFDataset if versions.spec().max_samples else core.RLHFDatasetBeforeMaxSamples


_INSTALLED = []


def _module(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    _INSTALLED.append(name)
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module


def install(version):
    """Makes `import verl...` return the fake of `version` (one of versions.VERSIONS)."""
    uninstall()
    versions.select(version)
    spec = versions.spec()
    _module("verl", __version__=version)
    _module("verl.utils")
    _module("verl.utils.dataset")
    _module("verl.utils.dataset.rl_dataset", RLHFDataset=rlhf_dataset_class(),
            collate_fn=core.collate_fn)
    if spec.curriculum_sampler:
        _module("verl.experimental")
        _module("verl.experimental.dataset")
        _module("verl.experimental.dataset.sampler", AbstractSampler=AbstractSampler,
                AbstractCurriculumSampler=AbstractCurriculumSampler)
    if spec.v1_trainer:
        from fake_verl import v1

        v1.reset_transfer_queue()
        _module("transfer_queue", **v1.TQ_API)
        _module("verl.trainer")
        _module("verl.trainer.ppo")
        _module("verl.trainer.ppo.v1")
        _module("verl.trainer.ppo.v1.replay_buffer", ReplayBuffer=v1.ReplayBuffer)


def uninstall():
    for name in reversed(_INSTALLED):
        sys.modules.pop(name, None)
    _INSTALLED.clear()
    sys.modules.pop("dots_client.verl", None)
