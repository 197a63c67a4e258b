"""Martingale strategies and the mining rounds they play."""
