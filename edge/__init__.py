"""Edge service: WebSocket audio in, VAD segments to Triton, moderation results out."""
