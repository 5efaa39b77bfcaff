"""Start-up shim for the ComfyUI test server (see ``comfypanel.devserver``).

This folder is put on ``PYTHONPATH`` for the ComfyUI process only, so that Python imports its
``sitecustomize.py`` at start. Nothing in the panel imports it; the ``__init__.py`` exists so
setuptools ships the folder as package data.
"""
