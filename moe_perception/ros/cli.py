"""Subcommands of ``moe-perception`` for this part (argparse only; handlers import lazily)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Add this part's subcommands to the ``moe-perception`` parser."""
