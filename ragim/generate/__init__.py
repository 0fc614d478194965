"""Generators: from a task description and its retrieved neighbours to model parameters."""

from ragim.generate.base import GENERATORS, Generator, register_generator

__all__ = [
    "GENERATORS",
    "Generator",
    "register_generator",
    "StatisticalGenerator",
    "AttentionGenerator",
    "RagIm2024Generator",
]


def __getattr__(name):
    if name == "StatisticalGenerator":
        from ragim.generate.statistical import StatisticalGenerator

        return StatisticalGenerator
    if name == "AttentionGenerator":
        from ragim.generate.attention import AttentionGenerator

        return AttentionGenerator
    if name == "LMGenerator":
        from ragim.generate.lm import LMGenerator

        return LMGenerator
    if name == "RagIm2024Generator":
        from ragim.generate.ragim2024 import RagIm2024Generator

        return RagIm2024Generator
    raise AttributeError(name)
