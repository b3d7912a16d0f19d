"""The skills under /v1: query, caption, detect, point, segment (handlers.py), and the checks of their fields
(validation.py), which batch lines and tuning rollouts share."""
