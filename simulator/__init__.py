"""Local Azure OpenAI chat-completions simulator that speaks Azure's exact wire format."""

from simulator.server import SimulatorConfig, create_simulator_app, run_simulator

__all__ = ["SimulatorConfig", "create_simulator_app", "run_simulator"]
