"""Test doubles: ``comfy.ComfyDouble`` (a fake local ComfyUI), ``cloud.CloudDouble`` +
``cloud.StorageDouble`` (a fake Comfy Cloud), pytest fixtures in ``fixtures`` and a WebSocket test
client in ``wsclient``."""
