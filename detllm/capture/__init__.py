"""Capture: running a model and recording what it generated.

Only this package imports torch, transformers or vLLM, and only when a backend is
created: ``import detllm.capture`` itself stays light.
"""
