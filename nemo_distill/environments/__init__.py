"""Environments score rollouts: ``math`` (answer extraction + math-verify)."""
