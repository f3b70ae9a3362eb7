"""Fakes of verl, per version, for testing dots_client.verl without verl.

verl (and its GPU stack) cannot run here. These fakes reproduce, from a reading of
verl-project/verl at the release tags v0.4.1, v0.5.0, v0.6.0, v0.6.1, v0.7.0, v0.7.1, v0.8.0,
v0.9.0 and main at 1dda039b9 (0.10.0.dev), what verl does to a dataset and its batches between
the dataset and the feedback hooks: module loading (pkg:// and file paths), dataset
construction and item format, the sampler and dataloader, the legacy trainer's generation-batch
split and agent-loop copy-back, the hook call order, and the V1 trainer's TransferQueue and
ReplayBuffer plug-in. Each module names the verl files it follows; versions.py lists what
differs per version. tests/python/test_fake_verl.py tests the fakes' claims themselves.

    fake_verl.install("0.8.0")   # sys.modules gets verl 0.8.0's modules; dots_client.verl is
    ...                          # imported afresh by the next load (pkg:// or file path)
    fake_verl.uninstall()
"""

from fake_verl.core import Config, DataProto, create_rl_dataset, load_extern  # noqa: F401
from fake_verl.modules import install, uninstall  # noqa: F401
from fake_verl.versions import VERSIONS, spec  # noqa: F401
