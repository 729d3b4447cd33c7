"""Evaluation protocol, result records, releases and the HTML leaderboard."""
