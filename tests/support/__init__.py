"""Helpers the test tiers share: tiny models built on the spot, reference math."""
