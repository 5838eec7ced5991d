"""Andes: QoE-aware serving for LLM text streaming."""
__version__ = "0.1.0"
