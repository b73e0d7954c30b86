"""Scoring a model: the test report, the accuracy under distortions, the figures, and reproduced metrics checked."""
