"""Typed edge settings, read from ``EDGE_*`` environment variables (and ``TRITON_URL``); the
Triton, VAD and verdict ones are the shared core's (moderation/settings.py)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from moderation.settings import ModerationSettings


class EdgeSettings(ModerationSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_", alias_generator=None)

    host: str = "0.0.0.0"
    """Interface uvicorn binds to."""
    port: int = 8000
    """Port of the HTTP/WebSocket server."""
    jobs: bool = False
    """Serve the batch job API (``/v1/jobs``, docs/JOBS.md): needs Redis (``REDIS_URL``) and
    ``python -m jobs.worker`` processes; ``make run`` starts both and turns this on."""
    max_frame_bytes: int = Field(1 << 20, gt=0)
    """Largest binary frame accepted; bigger frames get a ``frame_too_large`` error."""
    max_pending_segments: int = Field(16, gt=0)
    """Segments in flight per session; beyond it the edge stops reading the socket (backpressure)."""
    bulk_lead_s: float = Field(2.0, gt=0)
    """A session whose audio runs more than this ahead of the wall clock (an upload, a file sent
    as fast as the socket takes it) is bulk: its segments go to Triton at low priority and within
    the bulk shares below, so real-time streams are never starved (docs/OPERATIONS.md, fairness)."""
    bulk_max_in_flight: int = Field(1, gt=0)
    """Triton calls of all bulk sessions of this edge process at once; bulk sessions take turns.
    On a GPU, raise it to what Triton batches beside the real-time load."""
    bulk_session_max_in_flight: int = Field(1, gt=0)
    """Triton calls of one bulk session at once (its share); its other segments wait in the edge."""
    bulk_pause_realtime_sessions: int = Field(1, ge=0)
    """Bulk calls do not start while this many real-time sessions of this edge process are
    speaking or awaiting a result: on a CPU one call takes the whole machine, so by default bulk
    work fills the pauses of live speech. On a GPU raise it (a share of the streams one replica
    holds), or 0: never pause, bulk is then bounded by its shares alone."""
    bulk_max_pause_s: float = Field(5.0, gt=0)
    """Longest a bulk call waits for live speech to pause; then it goes anyway (at most one such
    call per bulk share), so uploads are slowed by real-time traffic but never starved."""
    outage_wait_s: float = Field(30.0, ge=0)
    """A segment whose call found no Triton server (all down, or its server died under it) waits
    this long for one to be ready again and is sent again, its result marked ``late``; past it the
    client gets ``triton_unavailable``. 0: no wait. A restart by ``make run`` takes about 10 s."""
    outage_max_segments: int = Field(256, ge=0)
    """Segments this edge process holds for a Triton server at once (each keeps its audio, at most
    30 s of 16 kHz float32, 1.9 MB); more get ``triton_unavailable`` at once. Each session also
    holds at most ``max_pending_segments``, after which it stops reading its socket."""
    interim_interval_s: float = Field(0.3, gt=0)
    """Interim results (clients that ask for ``interim``): the open segment is transcribed again
    once this much new audio has come since its last interim call (and that call has answered),
    or as soon as its speech pauses for the stable margin. On CPU each call costs about a quarter
    of a final (docs/OPERATIONS.md, interim results): at 0.3 s the p95 flag lag of one stream on 2
    cores was 1.27 s, at 0.5 s 1.69 s (docs/PERFORMANCE.md, flag lag)."""
    interim_stable_margin_s: float = Field(0.3, ge=0)
    """An interim span is sent only when its words ended at least this long before the end of the
    audio heard: a word still being spoken at the end may be heard as another one."""
    interim_context_s: float = Field(2.0, ge=0)
    """An interim call hears the open segment from this long before the part the previous one
    could judge (its stable margin) to the end: fewer words to decode than the whole segment, and
    context for the words that the previous call heard unfinished (1 s lost more words than 2 s
    in scripts/bench/flag_lag.py)."""
    interim_encoder_fit: bool = True
    """Interim calls have Whisper encode just the audio they send (plus 3 s), not its 30 s window:
    about a third of the compute on CPU, a little less accurate; the final, on the full window,
    confirms or not. ``false``: interim calls cost what a final does."""
    interim_max_calls: int = Field(1, ge=1)
    """An interim call is skipped (never queued) while this edge process has this many Triton calls
    in flight, real-time finals and interims together. On a CPU one call takes the machine; on a
    GPU raise it to what one replica batches beside the real-time finals."""
    max_sessions: int = Field(500, gt=0)
    """Concurrent WebSocket sessions per process; more are refused with close code 1013."""
    first_frame_timeout_s: float = Field(10.0, gt=0)
    """A session that sends no frame at all within this of its ``ready`` event gets a
    ``first_frame_timeout`` error and the summary, and is closed with 1008."""
    idle_timeout_s: float = Field(60.0, gt=0)
    """After its first frame, a session that sends no frame for this long (pings do not count) gets
    an ``idle_timeout`` error, its pending results and summary, and is closed with 1008."""
    max_session_s: float = Field(4 * 3600.0, gt=0)
    """Longest session; past it the edge sends a ``max_duration`` error, the pending results and the
    summary, and closes with 1000 (the client may open a new session to go on)."""
    ws_ping_interval_s: float | None = Field(20.0, gt=0)
    """WebSocket keepalive pings (keep NATs and proxies from dropping a quiet connection); None: none."""
    ws_ping_timeout_s: float | None = Field(None, gt=0)
    """Close a session whose pong has not come back within this; None (default): never. While the
    edge holds a fast client back, the client's pong waits behind the audio it has already sent,
    so a timeout here would cut off exactly the clients backpressure is slowing down. Dead
    clients are ended by the idle timeout, or when a result cannot be sent."""
    auth: str | None = Field(None, pattern="^(required|none)$")
    """Client authentication of /ws/audio (docs/SECURITY.md). ``required``: every session needs an
    API key or a JWT, and at least one source below must be configured; ``none``: open, on purpose
    (trusted network, local development). Unset: required when a source is configured, otherwise
    ``python -m edge`` refuses to start (an app built in-process, as by the unit tests, runs open)."""
    api_keys_file: str | None = None
    """File of hashed API keys, one ``NAME sha256:HEX`` line per key (``python -m
    scripts.service.make_api_key NAME`` prints a new key and its line); read at start."""
    api_key_hashes: str | None = Field(None, repr=False)
    """Hashed API keys from an environment secret: the same entries, separated by newlines or commas."""
    jwt_secret: str | None = Field(None, repr=False)
    """Shared secret of HS256 JWTs; set: such bearer tokens are accepted."""
    jwt_public_key_file: str | None = None
    """PEM RSA public key; set: RS256 JWTs signed by its private key are accepted."""
    jwt_audience: str | None = None
    """Required ``aud`` claim of JWTs; unset: tokens with an ``aud`` claim are refused."""
    jwt_issuer: str | None = None
    """Required ``iss`` claim of JWTs; unset: not checked."""
    max_sessions_per_key: int = Field(20, gt=0)
    """Concurrent sessions of one API key or one JWT subject; more get ``server_busy`` and 1013."""
    moderator_keys: str = ""
    """Comma-separated names of API keys that may decide incidents (as JWTs whose ``roles`` claim
    holds ``moderator`` may); other keys may read them. With authentication off, anyone may."""
    allowed_origins: str = ""
    """Comma-separated browser origins (``https://app.example.com``) allowed to open sessions;
    ``*`` allows any. A handshake with another Origin is refused; one without Origin (a native
    client) is not concerned, nor one from the edge's own host (its console, ``/console``)."""
    ops_auth: bool = True
    """With authentication on, /readyz and /metrics need a credential too (``Authorization:
    Bearer``); false leaves them open for probes and scrapers on an internal network."""
    ssl_certfile: str | None = None
    """PEM certificate (chain) to serve HTTPS/WSS directly; needs ``ssl_keyfile``."""
    ssl_keyfile: str | None = None
    """PEM private key of ``ssl_certfile``."""
    drain_grace_s: float = Field(30.0, ge=0)
    """On SIGTERM the edge reports not-ready and refuses new sessions at once, and gives open
    sessions this long to end by themselves; then each gets its pending results, its summary, a
    ``server_shutdown`` event and close 1012 (clients reconnect, to another edge)."""
    log_level: str = "info"
    """uvicorn and application log level."""

    default_language: None = None
    """Removed: the language of clients that name none is the whisper model's (export it with
    ``--language``). Setting EDGE_DEFAULT_LANGUAGE stops the edge rather than being ignored."""

    @field_validator("default_language", mode="before")
    @classmethod
    def _removed(cls, value: object) -> None:
        if value is not None:
            raise ValueError("EDGE_DEFAULT_LANGUAGE was removed: export whisper with --language instead "
                             "(python -m scripts.export.export_whisper --language …, then export_ensemble)")
        return None
