"""The legacy trainer's data path: RayPPOTrainer._create_dataloader and fit, reduced to what
happens to a batch between the dataset and the feedback hooks, per version
(verl/trainer/ppo/ray_trainer.py at v0.5.0, v0.6.0, v0.6.1, v0.7.0, v0.7.1, v0.8.0, v0.9.0
and main; from v0.9.0 it runs when trainer.use_v1=False, through main_ppo_v0.py).

Per step (fit): DataProto.from_single_dict; a uid per prompt (before the generation batch is
split off from v0.6.0, after generation in v0.5.0); the generation batch split off (see
versions.Spec.gen_batch) and repeated rollout.n times (interleaved); generation, whose output
carries responses, response_mask and (agent loop, rewards computed during rollout) rm_scores,
and the input non-tensor columns only where the version's rule copies them back; the batch
repeated and united with the output; token_level_scores (rm_scores, or the reward function on
the united batch) with the reward on the last response token; old_log_probs; balance_batch
(a row permutation); a checkpoint when save_freq divides the step or at the last step; then
v0.5.0..v0.7.1: `if isinstance(dataloader.sampler, AbstractCurriculumSampler): update(batch)`;
global_steps += 1; `if is_last_step: return`; `if hasattr(train_dataset, "on_batch_end"):
on_batch_end(batch=batch)`. The loop is `for epoch in range(total_epochs): for batch_dict in
dataloader`, so when trainer.total_training_steps exceeds the data the loop ends with the
data, after the last batch's hooks.
"""

import uuid

import numpy as np

from fake_verl import core
from fake_verl.modules import AbstractCurriculumSampler
from fake_verl.versions import spec

REWARD_KEYS = {"data_source", "reward_model", "extra_info", "uid"}
FIXED_POPS = ("raw_prompt_ids", "multi_modal_data", "raw_prompt", "tools_kwargs",
              "interaction_kwargs", "index", "agent_name")
PROMPT_TENSORS = ("input_ids", "attention_mask", "position_ids")


def get_gen_batch(batch, async_mode):
    """The generation batch of the installed version; `batch` keeps the rest."""
    s = spec()
    tensors = [k for k in PROMPT_TENSORS if k in batch.batch] if s.pops_prompt_tensors else []
    if s.gen_batch == "fixed":
        return batch.pop(tensors, [k for k in FIXED_POPS if k in batch.non_tensor_batch])
    keys = [k for k in batch.non_tensor_batch if k not in REWARD_KEYS]
    gen = batch.pop(tensors, keys)
    copy = async_mode if s.version in ("0.6.0", "0.6.1", "0.7.0") else True
    if copy:
        gen.non_tensor_batch.update(batch.non_tensor_batch)
    return gen


class RayPPOTrainer:
    """rollout(extra_info, sample_index, global_step) -> (reward, response_length,
    logprob_sum) stands in for generation, the reward function and the old-log-prob pass.

    async_mode: actor_rollout_ref.rollout.mode == "async" (v0.5.0..v0.6.1; always from
    v0.7.0). reward_workers: reward-loop workers handed to the agent loop (v0.7.1..: True
    unless a reward model is colocated; the default configuration has no reward model).
    """

    def __init__(self, config, rollout, checkpoints=None, async_mode=False,
                 reward_workers=True):
        self.config = config
        self.rollout = rollout
        self.checkpoints = checkpoints if checkpoints is not None else {}
        self.async_mode = async_mode or spec().rollout == "agent_loop"
        self.reward_workers = reward_workers
        data = config.data
        self.train_dataset = core.create_rl_dataset(data.train_files, data, None, None,
                                                    is_train=True)
        self.val_dataset = core.create_rl_dataset(data.val_files, data, None, None,
                                                  is_train=False)
        sampler = core.create_rl_sampler(data, self.train_dataset)
        batch_size = data.get("gen_batch_size") or data.train_batch_size
        self.train_dataloader = core.StatefulDataLoader(
            self.train_dataset, batch_size=batch_size, sampler=sampler,
            collate_fn=core.collate_fn, drop_last=True,
            num_workers=data.get("dataloader_num_workers", 8))
        self.total_training_steps = len(self.train_dataloader) * config.trainer.total_epochs
        if config.trainer.get("total_training_steps") is not None:
            self.total_training_steps = config.trainer.total_training_steps
        self.global_steps = 0
        self.prompts_per_step = {}  # global step -> extra_info of the step's prompts, in order
        self.hook_calls = []  # ("update" | "on_batch_end", global step)
        self.last_batch = None

    def _load_checkpoint(self):
        if "latest" in self.checkpoints:
            state = self.checkpoints["latest"]
            self.global_steps = state["global_steps"]
            self.train_dataloader.load_state_dict(state["dataloader"])

    def _save_checkpoint(self):
        self.checkpoints["latest"] = {"global_steps": self.global_steps,
                                      "dataloader": self.train_dataloader.state_dict()}

    def _generate(self, gen_batch, n, response_length):
        """The rollout's output for the repeated generation batch."""
        rows = len(gen_batch)
        mask = np.zeros((rows, response_length), dtype=np.int64)
        out = core.DataProto({"responses": np.zeros((rows, response_length), dtype=np.int64),
                              "response_mask": mask}, {})
        if not self.async_mode:  # sync rollout: returns the gen batch's non-tensor columns
            out.non_tensor_batch.update(gen_batch.non_tensor_batch)
        elif (spec().agent_copy_back == "without_reward_workers" and not self.reward_workers):
            out.non_tensor_batch.update(gen_batch.non_tensor_batch)
        return out

    def fit(self):
        self.global_steps = 0
        self._load_checkpoint()
        self.global_steps += 1
        n = self.config.actor_rollout_ref.rollout.n
        response_length = self.config.data.get("max_response_length", 8)
        for _ in range(self.config.trainer.total_epochs):
            for batch_dict in self.train_dataloader:
                batch = core.DataProto.from_single_dict(batch_dict)
                self.prompts_per_step[self.global_steps] = list(
                    batch.non_tensor_batch["extra_info"])
                uids = np.array([str(uuid.uuid4()) for _ in range(len(batch))], dtype=object)
                if spec().gen_batch != "fixed":
                    batch.non_tensor_batch["uid"] = uids
                gen_batch = get_gen_batch(batch, self.async_mode).repeat(n, interleave=True)
                is_last_step = self.global_steps >= self.total_training_steps
                output = self._generate(gen_batch, n, response_length)
                if spec().gen_batch == "fixed":
                    batch.non_tensor_batch["uid"] = uids
                batch = batch.repeat(n, interleave=True).union(output)
                rows = len(batch)
                scores = np.zeros((rows, response_length), dtype=np.float32)
                mask = batch.batch["response_mask"]
                old = np.zeros((rows, response_length), dtype=np.float32)
                for r in range(rows):
                    reward, length, logprob_sum = self.rollout(
                        batch.non_tensor_batch["extra_info"][r], r % n, self.global_steps)
                    length = max(1, min(int(length), response_length))
                    mask[r, :length] = 1
                    old[r, :length] = logprob_sum / length
                    scores[r, length - 1] = reward
                batch.batch["token_level_scores"] = scores
                batch.batch["old_log_probs"] = old
                batch.reorder(np.random.default_rng(self.global_steps).permutation(rows))
                save_freq = self.config.trainer.get("save_freq", -1)
                if save_freq > 0 and (is_last_step or self.global_steps % save_freq == 0):
                    self._save_checkpoint()
                self.last_batch = batch
                if spec().curriculum_sampler and isinstance(self.train_dataloader.sampler,
                                                            AbstractCurriculumSampler):
                    self.hook_calls.append(("update", self.global_steps))
                    self.train_dataloader.sampler.update(batch=batch)
                self.global_steps += 1
                if is_last_step:
                    return
                if hasattr(self.train_dataset, "on_batch_end"):
                    self.hook_calls.append(("on_batch_end", self.global_steps - 1))
                    self.train_dataset.on_batch_end(batch=batch)
