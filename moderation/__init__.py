"""The moderation core that the WebSocket edge, the batch workers and the clients share: the Triton pool and
its discovery, the VAD segmenter, the verdict, the events both emit and the settings both read.

It imports neither ``edge`` nor ``jobs`` (tests/unit/test_layout.py keeps it so).
"""
