"""Sub-commands of the ``steth`` CLI, one module each; see ``steth_hub.cli.COMMANDS``.

A command module imports only click and light steth_hub modules at import time;
anything heavy (torch, transformers, datasets, gradio) is imported inside the command.
"""
