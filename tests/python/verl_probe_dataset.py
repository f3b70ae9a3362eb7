"""A dataset for tests/python/test_fake_verl.py, loaded by the fake's data.custom_cls: verl's
RLHFDataset whose items also carry a top-level `probe` column and extra_info.probe, so a test
can see which columns reach the feedback hooks."""

from verl.utils.dataset.rl_dataset import RLHFDataset


class ProbeDataset(RLHFDataset):
    def __getitem__(self, item):
        row = super().__getitem__(item)
        row["probe"] = f"p{item}"
        row["extra_info"] = dict(row.get("extra_info") or {}, probe=f"p{item}")
        return row

    def on_batch_end(self, batch):
        self.seen = batch
