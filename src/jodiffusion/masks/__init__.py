"""Stage 4 of the paper, mask optimisation: small regions take their boundary's most frequent label."""
