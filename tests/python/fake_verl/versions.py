"""What differs between the verl versions the fake reproduces, with where each fact was read
(verl-project/verl; "main" is 1dda039b9, whose verl/version/version says 0.10.0.dev)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Spec:
    version: str
    # verl/utils/import_utils.py: pkg:// module paths (load_extern_type from v0.5.0) ...
    pkg_loading: bool
    # ... and file modules named custom_module_<hash> (load_module, v0.7.0..) not custom_module.
    hashed_module_name: bool
    # main_ppo.py / trainer/ppo/utils.py create_rl_dataset passes max_samples (v0.6.1..).
    max_samples: bool
    # verl/experimental/dataset/sampler.py + data.sampler.class_path (v0.5.0..v0.7.1).
    curriculum_sampler: bool
    # rl_dataset.py __getitem__ returns raw_prompt, no tokens (v0.7.0..).
    raw_prompt_items: bool
    # ray_trainer.py: how the generation batch is split off the batch:
    #   "fixed"  v0.5.0: pop input_ids/attention_mask/position_ids and a fixed list of
    #            non-tensor keys (raw_prompt_ids, raw_prompt, tools_kwargs, interaction_kwargs,
    #            index, agent_name, multi_modal_data); every other column stays in the batch;
    #   "reward_keys" v0.6.0..: _get_gen_batch pops every non-tensor key except data_source,
    #            reward_model, extra_info, uid (plus the three tensors until v0.6.1);
    #            the gen batch gets a copy of the kept keys in async mode (v0.6.x) / always
    #            (v0.7.1..; v0.7.0 in async mode, which is always on).
    gen_batch: str
    pops_prompt_tensors: bool
    # Rollout: "sync_or_async" (v0.5.0..v0.6.1: rollout.mode; sync returns the gen batch's
    # non-tensor columns), "agent_loop" (v0.7.0..: always async / agent loop).
    rollout: str
    # agent_loop.py _postprocess copies the input non-tensor columns back into its output:
    # "never" (v0.6.0..v0.7.0), "without_reward_workers" (v0.7.1..: only when
    # reward_loop_worker_handles is None, i.e. a colocated reward model).
    agent_copy_back: str
    # trainer/ppo/v1 (v0.9.0..): the V1 trainer, default trainer.use_v1=True.
    v1_trainer: bool
    # v1/trainer_base.py step(): main calls prepare_step() (which calls _add_batch_to_generate);
    # v0.9.0 calls _add_batch_to_generate() directly. Same effect in sync mode.
    prepare_step: bool = False


_SPECS = {
    "0.4.1": Spec("0.4.1", False, False, False, False, False, "fixed", True, "sync_or_async",
                  "never", False),
    "0.5.0": Spec("0.5.0", True, False, False, True, False, "fixed", True, "sync_or_async",
                  "never", False),
    "0.6.0": Spec("0.6.0", True, False, False, True, False, "reward_keys", True,
                  "sync_or_async", "never", False),
    "0.6.1": Spec("0.6.1", True, False, True, True, False, "reward_keys", True,
                  "sync_or_async", "never", False),
    "0.7.0": Spec("0.7.0", True, True, True, True, True, "reward_keys", False, "agent_loop",
                  "never", False),
    "0.7.1": Spec("0.7.1", True, True, True, True, True, "reward_keys", False, "agent_loop",
                  "without_reward_workers", False),
    "0.8.0": Spec("0.8.0", True, True, True, False, True, "reward_keys", False, "agent_loop",
                  "without_reward_workers", False),
    "0.9.0": Spec("0.9.0", True, True, True, False, True, "reward_keys", False, "agent_loop",
                  "without_reward_workers", True),
    "0.10.0.dev": Spec("0.10.0.dev", True, True, True, False, True, "reward_keys", False,
                       "agent_loop", "without_reward_workers", True, prepare_step=True),
}

VERSIONS = tuple(_SPECS)
_current = [None]


def select(version):
    _current[0] = _SPECS[version]


def spec():
    if _current[0] is None:
        raise RuntimeError("fake_verl.install(version) was not called")
    return _current[0]
