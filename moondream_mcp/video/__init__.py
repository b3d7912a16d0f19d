"""Video: an object found and followed through a clip, or hidden in a new copy of it. Knows nothing of MCP.

    source.py      a video reference -> a checked local file (file guard) or a download (URL guard, byte cap)
    sampling.py    which frames to look at: fps / every n-th frame, max_frames, start / end
    reading.py     frames decoded as a stream, turned as the viewer sees them (PyAV)
    scanning.py    sampled frames to concurrent workers, one frame decoded at a time
    tracking.py    detections joined into tracks (IoU), and each track between its samples
    redaction.py   regions blurred, pixelated or boxed out in a frame's own planes
    writing.py     a video re-encoded frame by frame: same timing, size and rotation, audio kept
    sheets.py      contact sheets of key frames
    detection.py   detect_video: per-frame JSONL (resumable), counts over time, tracks
    redacting.py   redact_video: sample, track, rewrite

PyAV is the optional `video` extra: the modules that import it (reading, scanning, redaction, writing) are
imported inside the jobs, after errors.require_av() has said what to install when it is missing.
"""
