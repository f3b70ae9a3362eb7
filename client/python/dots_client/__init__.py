"""Python client of the dots service (proto/dots/v1/dots.proto).

Needs the stubs generated at build time (`dots.v1.dots_pb2`, `dots.v1.dots_pb2_grpc`, written to
BUILD_DIR/python by the `python_stubs` CMake target) on the import path, next to this package:

    PYTHONPATH=BUILD_DIR/python:SOURCE_DIR/client/python /usr/bin/python3 ...

Runs on Debian's python3-grpcio, python3-protobuf and python3-numpy; nothing from PyPI.

Trainer integration: `StepIterator` (dots_client.trainer) drives a custom training loop step by
step, resume included; `dots_client.verl` makes a dots run the training data of a verl job
(dataset plus the feedback hook of each verl version and trainer).
"""

from dots_client.client import Batch, Client, DotsError, Group, Item, ReplayGroup
from dots_client.trainer import Step, StepIterator

# dots_client.verl (the verl adapter) is not imported here: import it explicitly; it needs no
# verl or torch to import, and picks its mechanism from the verl version it finds.
__all__ = ["Batch", "Client", "DotsError", "Group", "Item", "ReplayGroup", "Step", "StepIterator"]
