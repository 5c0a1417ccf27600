"""Desktop client: moderate what the computer plays (or a microphone), live, over the edge's
WebSocket, and beep, duck or bleep harmful words (``python -m desktop``; docs/DESKTOP.md).

It uses the shared core's wire protocol and reconnection policy (moderation.protocol,
moderation.client) and imports no other part (tests/unit/test_layout.py keeps it so).
"""
