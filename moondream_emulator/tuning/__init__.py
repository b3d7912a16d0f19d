"""The tuning API under /v1/tuning: its handlers, the checks of their bodies, the finetunes' state, rollouts
and rewards."""
