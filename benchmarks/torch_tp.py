"""Our own tensor-parallel decoder (forkspawn.model) under each start method and parent state."""

from . import common as suite


class TorchTPStartup(suite.Startup):
    engine = "torch-tp"


class TorchTPPhases(suite.Phases):
    engine = "torch-tp"


class TorchTPMemory(suite.Memory):
    engine = "torch-tp"


class TorchTPThroughput(suite.Throughput):
    engine = "torch-tp"
