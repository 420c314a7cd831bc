"""Shared building blocks of sb3-dmash: replay buffer, context encoders, hypernetworks, losses."""
