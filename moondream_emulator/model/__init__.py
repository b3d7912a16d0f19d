"""What the emulated model sees and says, and how well: shared by every API (skills, tuning, batch).

vision.py finds the solid-coloured regions of an image; sight.py decodes an upload into its scene, cached;
answers.py builds the sentences; policy.py is the systematic error that finetuning shrinks.
"""
