"""Samplers of masked-diffusion LMs: LLaDA's block sampler, Fast-dLLM's parallel decoding and KV caches,
iLLaDA's variable-length generation, behind one entry point :func:`generate`."""

from illada.sampling.loop import GenerationResult, generate
from illada.sampling.settings import CACHE_MODES, DECODERS, REMASKING, SamplerSettings

__all__ = ["CACHE_MODES", "DECODERS", "GenerationResult", "REMASKING", "SamplerSettings", "generate"]
